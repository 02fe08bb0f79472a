# Sourced by the bench scripts that run a Python peer: makes .local/bench-venv with the ONNX Runtime version
# perch loads (scripts/setup.sh installs the same one), numpy and OpenCV, and sets PY to its python.
# Idempotent. Expects ROOT (the repository) to be set.
BENCH_ORT_VERSION=1.31.1
BENCH_VENV=$ROOT/.local/bench-venv
bench_venv_ok() {
    [[ -x "$BENCH_VENV/bin/python" ]] &&
        "$BENCH_VENV/bin/python" -c "import sys, cv2, numpy, onnxruntime; sys.exit(onnxruntime.__version__ != '$BENCH_ORT_VERSION')" 2>/dev/null
}
if ! bench_venv_ok; then
    echo "== setting up $BENCH_VENV (onnxruntime==$BENCH_ORT_VERSION, numpy, opencv-python-headless)" >&2
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        { echo "python3 >= 3.11 is needed (bench/python_frame.py reads the manifest with tomllib)" >&2; exit 1; }
    if [[ ! -x "$BENCH_VENV/bin/python" ]]; then
        python3 -m venv "$BENCH_VENV" || { echo "cannot create a venv: on Debian, apt-get install python3-venv" >&2; exit 1; }
    fi
    "$BENCH_VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$BENCH_VENV/bin/python" -m pip install --quiet "onnxruntime==$BENCH_ORT_VERSION" numpy opencv-python-headless >&2
    bench_venv_ok || { echo "$BENCH_VENV is still not usable after installing" >&2; exit 1; }
fi
PY="$BENCH_VENV/bin/python"
