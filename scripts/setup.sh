#!/usr/bin/env bash
# Installs everything perch needs to build, run its demo and pass its tests on Debian 12 (bookworm).
# Idempotent: each step checks what is already there. Run as root (or with sudo available).
#
#   scripts/setup.sh            system packages, ONNX Runtime, model check, test media
#
# Nothing is needed beside the checkout: the model is in models/ (git), the test media are made from
# Debian's opencv-doc. ../shared, when present, is used instead (the model if models/ lacks it, its media).
#
# Environment:
#   PERCH_NO_SHARED=1  ignore ../shared: the media are made from opencv-doc (what a fresh clone does)
#   PERCH_MODEL_PATH   an operator-provided yolox_nano.onnx, when models/ has none that matches the pinned
#                      sha256 (checked against it)
#   PERCH_MODEL_URL    a release URL for it (same check)
#   ORT_WHEEL          a local onnxruntime wheel to take libonnxruntime.so from, instead of PyPI
#   PERCH_SKIP_APT=1   skip the system packages (already installed by an image)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${PERCH_SHARED:-$ROOT/../shared}
[ "${PERCH_NO_SHARED:-0}" != 1 ] || SHARED=/nonexistent
LOCAL=$ROOT/.local
ORT_VERSION=1.31.1
say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# --- system packages ---------------------------------------------------------------------------
APT_PACKAGES=(
  pkg-config build-essential ca-certificates curl unzip python3-pip
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav gstreamer1.0-tools
  # RTSP test server used by the tests (gst-rtsp-server through PyGObject)
  gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gir1.2-gstreamer-1.0 python3-gi
  ffmpeg mosquitto mosquitto-clients
  # OTA bootloader tools driven by the tests: fw_printenv/fw_setenv (+ mkenvimage), grub-editenv
  libubootenv-tool u-boot-tools grub-common
  # the shipped U-Boot boot script run by real U-Boot (tests/uboot_qemu.rs): QEMU, Debian's U-Boot build,
  # sfdisk and mke2fs for the virtio disk
  qemu-system-arm u-boot-qemu fdisk e2fsprogs
  # the shipped grub.cfg run by real GRUB in user space (tests/grub_emu.rs)
  grub-emu
  # the x86 appliance as a VM (ota/vm/build.sh, tests/vm_appliance.rs): Debian's archive into a root file
  # system, GRUB for UEFI, FAT tools for the EFI system partition, QEMU with its UEFI firmware
  mmdebstrap grub-efi-amd64-bin dosfstools mtools qemu-system-x86 ovmf socat
  # headless browser for the status page test (tests/http.rs)
  chromium
  # Packaging checks (tests/packaging.rs): systemd-analyze and systemd-sysusers; a venv for oelint-adv
  systemd python3-venv
  # The RAUC side of the OTA install benchmark (bench/ota_install.sh, bench/rauc_side.sh): rauc, its bundle
  # tool's mksquashfs, a private D-Bus for its service
  rauc squashfs-tools dbus
)
if [ "${PERCH_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${#missing[@]} system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "system packages present"
  fi
  # The broker is started by the tests on their own ports; the packaged service is not needed.
  if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
    $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
fi
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) and run this again"

# --- ONNX Runtime (from the onnxruntime wheel on PyPI: no other download) -------------------------
ORT_DIR=$LOCAL/onnxruntime
if [ ! -e "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" ]; then
  arch=$(uname -m)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if [ -n "${ORT_WHEEL:-}" ]; then
    cp "$ORT_WHEEL" "$tmp/"
  else
    say "downloading onnxruntime==$ORT_VERSION wheel ($arch) from PyPI"
    python3 -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.11 \
      --platform "manylinux_2_28_$arch" --platform "manylinux_2_27_$arch" --platform "manylinux_2_17_$arch" \
      -d "$tmp" "onnxruntime==$ORT_VERSION" || die "could not download the onnxruntime wheel: check access to PyPI, or set ORT_WHEEL"
  fi
  mkdir -p "$ORT_DIR"
  unzip -o -j -q "$tmp"/onnxruntime-*.whl 'onnxruntime/capi/libonnxruntime.so*' 'onnxruntime/capi/libonnxruntime_providers_shared.so' -d "$ORT_DIR" \
    || die "the wheel does not contain libonnxruntime.so"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
  say "ONNX Runtime $ORT_VERSION installed in $ORT_DIR"
else
  say "ONNX Runtime $ORT_VERSION present"
fi

# --- oelint-adv (PyPI), for the Yocto layer check in tests/packaging.rs ----------------------------
OELINT_VERSION=9.11.2
OELINT=$LOCAL/oelint
if [ "$("$OELINT/bin/oelint-adv" --version 2>/dev/null)" != "oelint-adv $OELINT_VERSION" ]; then
  say "installing oelint-adv==$OELINT_VERSION into $OELINT"
  rm -rf "$OELINT"
  python3 -m venv "$OELINT" || die "python3 -m venv failed: install python3-venv"
  "$OELINT/bin/pip" install -q --disable-pip-version-check "oelint-adv==$OELINT_VERSION" \
    || die "could not install oelint-adv from PyPI"
else
  say "oelint-adv $OELINT_VERSION present"
fi

# --- model ------------------------------------------------------------------------------------
# models/yolox_nano.onnx is committed (Apache-2.0, see models/yolox_nano.provenance); the other sources are
# for a checkout without it (or with a damaged copy).
MANIFEST=$ROOT/models/yolox_nano.toml
MODEL=$ROOT/models/yolox_nano.onnx
MODEL_SHA=$(sed -n 's/^sha256 *= *"\([0-9a-f]*\)".*/\1/p' "$MANIFEST")
[ ${#MODEL_SHA} -eq 64 ] || die "cannot read the pinned sha256 from $MANIFEST"
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
if ! sha_ok "$MODEL" "$MODEL_SHA"; then
  rm -f "$MODEL"
  for candidate in "${PERCH_MODEL_PATH:-}" "$SHARED/models/yolox_nano.onnx"; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then
      sha_ok "$candidate" "$MODEL_SHA" || die "$candidate does not match the pinned sha256 $MODEL_SHA"
      cp "$candidate" "$MODEL.part" && mv "$MODEL.part" "$MODEL"
      say "model installed from $candidate"
      break
    fi
  done
  if [ ! -f "$MODEL" ] && [ -n "${PERCH_MODEL_URL:-}" ]; then
    say "downloading the model from $PERCH_MODEL_URL"
    curl -fsSL --retry 3 -o "$MODEL.part" "$PERCH_MODEL_URL" || die "download failed"
    sha_ok "$MODEL.part" "$MODEL_SHA" || { rm -f "$MODEL.part"; die "the downloaded model does not match the pinned sha256 $MODEL_SHA"; }
    mv "$MODEL.part" "$MODEL"
  fi
  [ -f "$MODEL" ] || die "no model: models/yolox_nano.onnx is missing or damaged (git checkout -- models/yolox_nano.onnx), or set PERCH_MODEL_PATH=/path/to/yolox_nano.onnx or PERCH_MODEL_URL"
else
  say "model present (sha256 ok)"
fi

# --- media for the demo and the tests -----------------------------------------------------------
# One of two sets, each in its own folder, with .local/media linking to the one in use (the demo, the
# tests, the benches and ota/vm/build.sh read .local/media):
#   shared      ../shared/media: the 720p street video, its frame at 5 s, the dog-bicycle-car photo
#   opencv-doc  made here from OpenCV's sample video vtest.avi in Debian's opencv-doc package (Apache-2.0 AND
#               BSD-3-Clause), so that a fresh clone needs nothing but Debian's archive: the same street-video
#               role under the same names (a 13.68 s cut as H.264 Main 1280x720, 25 fps, a keyframe every
#               second, no audio, and its frame at 5 s), and parked-van.jpg (768x576: the scene with the
#               walkers taken out, a temporal median of its frames, cropped to one parked van)
# The shared set when ../shared is there (and PERCH_NO_SHARED is not 1), else opencv-doc. What each set
# shows, for the tests that check content, is in tests/common/mod.rs (MediaSet).
# The source files are pinned by sha256; the opencv-doc set's outputs are checked by their properties (x264
# and the JPEG encoder may not give the same bytes in another ffmpeg) and remade when the recipe changes.
VTEST_SHA=45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf
OPENCV_DOC_RECIPE="$VTEST_SHA 1"
copy_media() { # dir name sha256
  local src=$SHARED/media/$2 dst=$1/$2
  sha_ok "$dst" "$3" && return 0
  [ -f "$src" ] || return 1
  sha_ok "$src" "$3" || die "$src does not match its sha256 $3"
  cp "$src" "$dst.part" && mv "$dst.part" "$dst"
}
probe() { ffprobe -v error -select_streams v:0 -show_entries "stream=$2" -of default=nw=1:nk=1 "$1" | paste -sd' '; }
make_opencv_doc_media() { # dir
  local dir=$1 tmp vtest
  [ "$(cat "$dir/recipe" 2>/dev/null)" = "$OPENCV_DOC_RECIPE" ] && return 0
  say "making the test media from Debian's opencv-doc (vtest.avi)"
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # apt's download user must be able to write there
  # An image without package lists (PERCH_SKIP_APT=1) gets them first.
  (cd "$tmp" && { apt-get download -qq opencv-doc >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download -qq opencv-doc >/dev/null; }; } \
    && dpkg -x opencv-doc_*.deb x) || die "could not download opencv-doc from Debian's archive"
  vtest=$(find "$tmp/x" -name 'vtest.avi*' | head -1)
  [ -n "$vtest" ] || die "vtest.avi not found in opencv-doc"
  case "$vtest" in *.gz) gunzip -c "$vtest" >"$tmp/vtest.avi"; vtest=$tmp/vtest.avi ;; esac
  sha_ok "$vtest" "$VTEST_SHA" || die "opencv-doc's vtest.avi does not match its sha256 $VTEST_SHA"
  rm -f "$dir"/*
  local ff=(ffmpeg -nostdin -v error -y)
  # 13.68 s from 7 s on (walkers in every frame), the upper 768x432 of the picture (the street, the parked
  # cars) scaled to 1280x720, 25 fps, encoded like a camera.
  "${ff[@]}" -ss 7 -i "$vtest" -t 13.68 -an -vf 'crop=768:432:0:0,scale=1280:720,fps=25,format=yuv420p' \
    -c:v libx264 -profile:v main -preset medium -crf 20 -g 25 -keyint_min 25 -sc_threshold 0 -threads 1 "$tmp/street.mp4"
  "${ff[@]}" -ss 5 -i "$tmp/street.mp4" -frames:v 1 -q:v 2 "$tmp/frame.jpg"
  # The median of every 7th frame over 113 frames (79 s): nobody stands that long, so nobody is left.
  "${ff[@]}" -i "$vtest" -vf "select='not(mod(n\,7))',setpts=N/TB,tmedian=radius=56,crop=728:546:0:0,scale=768:576" \
    -frames:v 1 -q:v 2 "$tmp/van.jpg"
  [ "$(probe "$tmp/street.mp4" codec_name,profile,width,height,r_frame_rate,nb_frames)" = "h264 Main 1280 720 25/1 342" ] \
    || die "the street video made from vtest.avi is not H.264 Main 1280x720 25 fps with 342 frames: $(probe "$tmp/street.mp4" codec_name,profile,width,height,r_frame_rate,nb_frames)"
  [ "$(probe "$tmp/frame.jpg" width,height)" = "1280 720" ] || die "the street frame is not 1280x720"
  [ "$(probe "$tmp/van.jpg" width,height)" = "768 576" ] || die "parked-van.jpg is not 768x576"
  mv "$tmp/street.mp4" "$dir/pedestrians-720p-gop1s.mp4"
  mv "$tmp/frame.jpg" "$dir/pedestrians-frame.jpg"
  mv "$tmp/van.jpg" "$dir/parked-van.jpg"
  rm -rf "$tmp"
  echo "$OPENCV_DOC_RECIPE" >"$dir/recipe"
}
shared_media=(
  "pedestrians-720p-gop1s.mp4 e15ebd8439dcf0cc8cabef067e2e73040dff79909534bf685549535e92055f2d"
  "pedestrians-frame.jpg f6243ef09cae36afb53bbdd3cc2a80cd9c7ed5387ecb528df40daed29aa50478"
  "dog-bicycle-car.jpg 5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866"
)
media_set=opencv-doc
if [ "${PERCH_NO_SHARED:-0}" != 1 ] && [ -d "$SHARED/media" ]; then
  media_set=shared
  mkdir -p "$LOCAL/media-shared"
  for m in "${shared_media[@]}"; do
    read -r name sha <<<"$m"
    copy_media "$LOCAL/media-shared" "$name" "$sha" || die "$SHARED/media/$name not found: run with PERCH_NO_SHARED=1 to make the media from Debian's opencv-doc"
  done
else
  mkdir -p "$LOCAL/media-opencv-doc"
  make_opencv_doc_media "$LOCAL/media-opencv-doc"
fi
echo "$media_set" >"$LOCAL/media-$media_set/set"
ln -sfn pedestrians-720p-gop1s.mp4 "$LOCAL/media-$media_set/demo.mp4"
# .local/media was a folder of copies before there were two sets.
[ -L "$LOCAL/media" ] || rm -rf "$LOCAL/media"
ln -sfn "media-$media_set" "$LOCAL/media"
MEDIA=$LOCAL/media
say "test media: the $media_set set ($LOCAL/media-$media_set)"

# --- environment for the demo, the tests and the benches -----------------------------------------
cat >"$LOCAL/env" <<ENV
# Written by scripts/setup.sh: source it to run perch from this checkout.
export ORT_DYLIB_PATH="$ORT_DIR/libonnxruntime.so"
export PERCH_MODEL="$MANIFEST"
export PERCH_MEDIA="$MEDIA"
ENV
say "done: source .local/env to use perch from this checkout"
