#!/usr/bin/env bash
# The RAUC side of bench/ota_install.sh: installs a plain image into a *file slot* with Debian's RAUC
# (tested with Debian 12's rauc 1.8-2, squashfs-tools 4.5.1).
#
#   rauc_side.sh prepare WORK IMAGE   one-off setup (PKI, system.conf, keyring,
#                                     bundle WORK/bench.raucb, private D-Bus +
#                                     long-running `rauc service`)
#   rauc_side.sh install WORK         one install (the part to time)
#   rauc_side.sh verify  WORK IMAGE   cmp target slot file vs IMAGE
#   rauc_side.sh stop    WORK         stop the rauc service and dbus-daemon
#
# Design notes:
# * Debian's rauc is built with D-Bus service support, so `rauc install` is only
#   a D-Bus client: it asks a running `rauc service` to install and blocks until
#   the service emits the Completed signal (exit 0 on success).
# * There is no system bus here (no systemd/dbus-daemon as system service, and
#   Debian's rauc ships no de.pengutronix.rauc system-bus policy file).  RAUC
#   picks the *session* bus for both service and client when
#   DBUS_STARTER_BUS_TYPE=session, so `prepare` starts a private
#   `dbus-daemon --session` listening on WORK/dbus.sock.
# * The service is started ONCE in `prepare` and kept running across installs
#   (like a real device, where rauc service is always running); `install` only
#   runs the client, so RAUC is charged only for the install itself.
#   `stop` ends both processes.  `install` restarts them if they have died.
# * bootloader=noop has no way to detect the booted slot (no rauc.slot= on the
#   kernel command line, root= does not match a slot), so the service is started
#   with --override-boot-slot=A; RAUC then always installs into the inactive
#   slot B = WORK/rauc-slot-b.img.  The noop backend never switches the primary,
#   so every install targets slot B again.
# * Bundle format: plain (the 1.8 default when the manifest names no format).
#   verity/crypt bundles need device-mapper (dm-verity), which this kernel lacks.
#   bundle-formats=plain in system.conf makes the service accept only plain.
set -euo pipefail

die() { echo "rauc_side.sh: $*" >&2; exit 1; }

need_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || die "required tool '$t' not found (apt-get install -y rauc squashfs-tools dbus openssl)"
    done
}

abs() { (mkdir -p "$1" && cd "$1" && pwd); }

bus_env() {
    export DBUS_STARTER_BUS_TYPE=session
    export DBUS_SESSION_BUS_ADDRESS="unix:path=$W/dbus.sock"
}

pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_daemons() {
    bus_env
    if ! pid_alive "$W/dbus.pid"; then
        rm -f "$W/dbus.sock"
        dbus-daemon --session --fork --nosyslog \
            --address="unix:path=$W/dbus.sock" --print-pid=3 3>"$W/dbus.pid" \
            >/dev/null 2>>"$W/dbus.log" || die "cannot start dbus-daemon (see $W/dbus.log)"
    fi
    if ! pid_alive "$W/service.pid"; then
        # setsid: detach from the caller's session/terminal so it survives.
        setsid rauc --conf="$W/system.conf" service --override-boot-slot=A \
            </dev/null >>"$W/service.log" 2>&1 &
        echo $! >"$W/service.pid"
        # wait until the service owns its bus name.  (Polling with `rauc status`
        # instead is noisy: the client can abort with SIGTRAP, a glib g_error,
        # while the service is still starting.)
        local i
        for i in $(seq 1 100); do
            if dbus-send --session --print-reply --dest=org.freedesktop.DBus / \
                   org.freedesktop.DBus.NameHasOwner string:de.pengutronix.rauc 2>/dev/null \
                   | grep -q 'boolean true'; then return 0; fi
            pid_alive "$W/service.pid" || die "rauc service exited (see $W/service.log)"
            sleep 0.1
        done
        die "rauc service did not come up (see $W/service.log)"
    fi
}

stop_daemons() {
    local f p i
    for f in service.pid dbus.pid; do
        if [[ -s "$W/$f" ]]; then
            p=$(cat "$W/$f")
            if kill -0 "$p" 2>/dev/null; then
                kill "$p" 2>/dev/null || true
                for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
                kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
            fi
            rm -f "$W/$f"
        fi
    done
    rm -f "$W/dbus.sock"
}

cmd_prepare() {
    local image
    need_tools rauc mksquashfs dbus-daemon dbus-send openssl setsid cmp
    [[ -f "$2" ]] || die "image '$2' not found"
    image=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
    W=$(abs "$1")
    stop_daemons
    rm -rf "$W/pki" "$W/bundle-in" "$W/data" "$W/mnt" "$W/bench.raucb" "$W/system.conf" \
           "$W"/*.log "$W/rauc-slot-a.img" "$W/rauc-slot-b.img"
    mkdir -p "$W/pki" "$W/bundle-in" "$W/data" "$W/mnt"

    # --- PKI: CA + signing cert (development only) -------------------------
    cat >"$W/pki/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = bench
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
EOF
    (
        cd "$W/pki"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key.pem -out ca.cert.pem \
            -days 3650 -subj "/CN=bench-ca" -config openssl.cnf -extensions v3_ca
        openssl req -newkey rsa:2048 -nodes -keyout key.pem -out dev.csr.pem \
            -subj "/CN=bench-signer" -config openssl.cnf
        openssl x509 -req -in dev.csr.pem -CA ca.cert.pem -CAkey ca.key.pem \
            -CAcreateserial -out cert.pem -days 3650 -extfile openssl.cnf -extensions v3_leaf
    ) >"$W/pki/openssl.log" 2>&1 || { cat "$W/pki/openssl.log" >&2; die "openssl failed"; }
    cp "$W/pki/ca.cert.pem" "$W/keyring.pem"

    # --- system.conf --------------------------------------------------------
    : >"$W/rauc-slot-a.img"
    : >"$W/rauc-slot-b.img"
    cat >"$W/system.conf" <<EOF
[system]
compatible=bench
bootloader=noop
mountprefix=$W/mnt
data-directory=$W/data
bundle-formats=plain

[keyring]
path=$W/keyring.pem

[slot.rootfs.0]
device=$W/rauc-slot-a.img
type=raw
bootname=A

[slot.rootfs.1]
device=$W/rauc-slot-b.img
type=raw
bootname=B
EOF

    # --- bundle ---------------------------------------------------------------
    # hard link if possible (same fs), else copy; the image name must end in
    # .img (RAUC chooses the update handler from the file name suffix).
    ln "$image" "$W/bundle-in/rootfs.img" 2>/dev/null || cp "$image" "$W/bundle-in/rootfs.img"
    cat >"$W/bundle-in/manifest.raucm" <<'EOF'
[update]
compatible=bench
version=1.0

[bundle]
format=plain

[image.rootfs]
filename=rootfs.img
EOF
    # -noI -noD -noF -noX: stored uncompressed. A random image does not compress anyway (mksquashfs would
    # spend half a minute per GiB finding that out); the install reads it without decompressing either way.
    rauc --cert="$W/pki/cert.pem" --key="$W/pki/key.pem" --keyring="$W/keyring.pem" \
        bundle --mksquashfs-args="-noI -noD -noF -noX" "$W/bundle-in" "$W/bench.raucb" >"$W/bundle.log" 2>&1 \
        || { cat "$W/bundle.log" >&2; die "rauc bundle failed"; }
    rm -rf "$W/bundle-in"

    # flush the freshly written bundle so its writeback does not land inside
    # the first timed install
    sync
    # --- long-running service (kept across installs) ------------------------
    start_daemons
}

cmd_install() {
    W=$(abs "$1")
    [[ -f "$W/bench.raucb" && -f "$W/system.conf" ]] || die "run 'prepare' first"
    start_daemons   # no-op when already running (normal case)
    bus_env
    # Truncate the target slot (A is the booted slot).  It must exist: RAUC opens
    # raw slot devices with O_WRONLY|O_EXCL (no O_CREAT, "Destination device ...
    # not found" otherwise) and does not truncate, so a longer old file would
    # keep its tail.  RAUC writes in 8 KiB read()/write() chunks and fsync()s the
    # slot file before reporting success.
    : >"$W/rauc-slot-b.img"
    rauc --conf="$W/system.conf" install "$W/bench.raucb" >"$W/install.log" 2>&1 \
        || { cat "$W/install.log" >&2; tail -n 20 "$W/service.log" >&2; die "rauc install failed"; }
}

cmd_verify() {
    W=$(abs "$1")
    cmp "$W/rauc-slot-b.img" "$2" || die "slot content differs from image"
}

cmd_stop() {
    W=$(abs "$1")
    stop_daemons
}

case "${1:-}" in
    prepare) [[ $# -eq 3 ]] || die "usage: $0 prepare WORK IMAGE"; cmd_prepare "$2" "$3" ;;
    install) [[ $# -eq 2 ]] || die "usage: $0 install WORK"; cmd_install "$2" ;;
    verify)  [[ $# -eq 3 ]] || die "usage: $0 verify WORK IMAGE"; cmd_verify "$2" "$3" ;;
    stop)    [[ $# -eq 2 ]] || die "usage: $0 stop WORK"; cmd_stop "$2" ;;
    *) die "usage: $0 {prepare WORK IMAGE|install WORK|verify WORK IMAGE|stop WORK}" ;;
esac
