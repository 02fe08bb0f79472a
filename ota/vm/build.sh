#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds perch's x86 appliance as a VM disk image, and the release rootfs images that go into bundles
# (ota/vm/README.md). What a box gets: Debian bookworm with systemd, a GPT with an EFI system partition
# (GRUB with ota/boot/grub.cfg and its grubenv), a data partition for /var/lib/perch and two root slots
# (A, B; read-only ext4), the perch service from overlay/ (units, sysusers, tmpfiles, udev rules, the
# systemd watchdog) and the release binary.
#
#   ota/vm/build.sh --out DIR [--release NAME=VERSION:VARIANT ...]
#
# DIR/disk.img       the box: slot A holds the base release (version 1.0.0, variant good), slot B empty
# DIR/NAME.ext4      one release rootfs per --release (variants below), for `perch bundle build --image rootfs=`
# DIR/vm.env         sizes and paths for tests/vm_appliance.rs and ota/vm/run.sh
#
# Variants (what a release does wrong, for the VM scenarios): good; gate-fail (its golden frame expects a
# label the model cannot find: boots, fails the health gate); crash-loop (its config is invalid: perch exits
# at every start); hang (a root task spins at top real-time priority from boot: userspace is wedged, only the
# hardware watchdog ends it).
#
# The Debian part (about 70 s, 90 MB from the archive) is cached under $PERCH_VM_CACHE (default
# ~/.cache/perch-vm), keyed by the package list and this script's base recipe; an empty cache works too.
# Inputs: $PERCH_BIN (default target/release/perch), $PERCH_ORT_LIB (default .local/onnxruntime/libonnxruntime.so),
# the model in models/ and the golden frame from $PERCH_GOLDEN with the labels in it, $PERCH_GOLDEN_LABELS (a
# TOML list; default the photo of the setup's media set and its labels, as tests/common/mod.rs's photo()).
set -euo pipefail

root_dir=$(cd "$(dirname "$0")/../.." && pwd)
out=""
releases=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --release) releases+=("$2"); shift 2 ;;
    *) echo "build.sh: unknown argument $1 (use --out DIR [--release NAME=VERSION:VARIANT])" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "build.sh: --out DIR is required" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (the image's files keep their owners)" >&2; exit 2; }
for tool in mmdebstrap mke2fs sfdisk mkfs.vfat mcopy grub-mkimage grub-editenv; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing: run scripts/setup.sh" >&2; exit 2; }
done
[ -d /usr/lib/grub/x86_64-efi ] || { echo "build.sh: grub-efi-amd64-bin is missing: run scripts/setup.sh" >&2; exit 2; }

bin=${PERCH_BIN:-$root_dir/target/release/perch}
[ -x "$bin" ] || { echo "build.sh: $bin not found: cargo build --release first (or set PERCH_BIN)" >&2; exit 2; }
ort=${PERCH_ORT_LIB:-$root_dir/.local/onnxruntime/libonnxruntime.so}
[ -f "$ort" ] || { echo "build.sh: libonnxruntime.so not found: run scripts/setup.sh (or set PERCH_ORT_LIB)" >&2; exit 2; }
case "${PERCH_GOLDEN:+own}:$(cat "$root_dir/.local/media/set" 2>/dev/null)" in
  own:*) golden=$PERCH_GOLDEN golden_labels=${PERCH_GOLDEN_LABELS:?set it with PERCH_GOLDEN, e.g. '["car"]'} ;;
  :shared) golden=$root_dir/.local/media/dog-bicycle-car.jpg golden_labels='["dog", "bicycle", "car"]' ;;
  :opencv-doc) golden=$root_dir/.local/media/parked-van.jpg golden_labels='["truck", "car"]' ;;
  *) golden=$root_dir/.local/media/none.jpg golden_labels='[]' ;;
esac
[ -f "$golden" ] || { echo "build.sh: golden frame $golden not found: run scripts/setup.sh (or set PERCH_GOLDEN)" >&2; exit 2; }
[ -f "$root_dir/models/yolox_nano.onnx" ] || { echo "build.sh: models/yolox_nano.onnx not found: run scripts/setup.sh" >&2; exit 2; }

# --- the Debian base (cached) -------------------------------------------------------------------------
suite=bookworm
mirror=${PERCH_VM_MIRROR:-http://deb.debian.org/debian}
packages=systemd,systemd-sysv,udev,kmod,util-linux,linux-image-amd64,initramfs-tools,zstd,grub-common,libgstreamer1.0-0,gstreamer1.0-plugins-base,gstreamer1.0-plugins-good,libunwind8,libdw1
# The modules the box needs (with their dependencies): virtio disk/net/console, ext4 and FAT, the i6300esb
# watchdog, vivid (a V4L2 test camera), squashfs and overlay. Everything else is removed: the kernel's
# 400 MB of modules would otherwise be most of every release image.
modules="virtio_pci virtio_blk virtio_net virtio_console ext4 vfat nls_cp437 nls_ascii i6300esb vivid squashfs overlay"
base_recipe() {
  cat <<EOF
suite=$suite mirror=$mirror packages=$packages modules=$modules
EOF
  declare -f customize_base
}
customize_base() {
  local r=$1 kver
  kver=$(ls "$r/usr/lib/modules")
  local keep
  keep=$(for m in $modules; do chroot "$r" modprobe -S "$kver" --show-depends "$m"; done | awk '$1 == "insmod" {print $2}' | sed 's|^/lib/|/usr/lib/|' | sort -u)
  find "$r/usr/lib/modules/$kver/kernel" -name '*.ko*' -print | sed "s|^$r||" | sort >"$r/tmp/all"
  comm -23 "$r/tmp/all" <(echo "$keep") | sed "s|^|$r|" | xargs -r rm -f
  [ "$(echo "$keep" | wc -l)" -ge 12 ] || { echo "build.sh: modprobe resolved only: $keep" >&2; exit 1; }
  find "$r/usr/lib/modules/$kver/kernel" -type d -empty -delete
  chroot "$r" depmod "$kver"
  # A small initramfs: only what mounts the root slot.
  echo MODULES=list >"$r/etc/initramfs-tools/conf.d/perch"
  printf '%s\n' virtio_pci virtio_blk ext4 >>"$r/etc/initramfs-tools/modules"
  chroot "$r" update-initramfs -u -k "$kver"
  rm -rf "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r/tmp/all" "$r"/var/cache/apt/*.bin
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} +
}
cache=${PERCH_VM_CACHE:-$HOME/.cache/perch-vm}
key=$(base_recipe | sha256sum | cut -c1-16)
base=$cache/base-$key.tar
if [ ! -f "$base" ]; then
  mkdir -p "$cache"
  echo "build.sh: building the Debian base ($suite) into $base"
  # mmdebstrap runs hooks with sh: the recipe goes in as a bash script.
  hook=$(mktemp)
  { echo "modules=\"$modules\""; declare -f customize_base; echo 'customize_base "$1"'; } >"$hook"
  mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" --aptopt='Apt::Install-Recommends "false"' \
    --customize-hook="bash $hook \"\$1\"" "$suite" "$base.part" "$mirror"
  rm -f "$hook"
  mv "$base.part" "$base"
fi

# --- a release rootfs ---------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/perch-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Fills the tree $1 with release $2 (version) of variant $3.
make_tree() {
  local r=$1 version=$2 variant=$3
  mkdir -p "$r"
  tar -C "$r" -xf "$base"
  cp -a "$root_dir/overlay/usr/." "$r/usr/"
  rm "$r/usr/lib/systemd/system/perch.service.d/jetson.conf"   # Jetson images only
  mkdir -p "$r/etc/perch/ota-keys" "$r/usr/lib/perch" "$r/usr/share/perch/models" "$r/var/lib/perch" "$r/boot/efi"
  install -m 0755 "$bin" "$r/usr/bin/perch"
  strip --strip-debug "$r/usr/bin/perch"
  install -m 0644 "$ort" "$r/usr/lib/perch/libonnxruntime.so"
  install -m 0644 "$root_dir/models/yolox_nano.onnx" "$root_dir/models/yolox_nano.toml" "$r/usr/share/perch/models/"
  install -m 0644 "$golden" "$r/usr/share/perch/golden.jpg"
  install -m 0644 "$root_dir/ota/dev-keys/dev-1.pub" "$r/etc/perch/ota-keys/"
  install -m 0644 "$root_dir/ota/vm/perch.toml" "$r/etc/perch/perch.toml"
  sed -i "s/^golden_labels = .*/golden_labels = $golden_labels/" "$r/etc/perch/perch.toml"
  # The test agent (a VM-only unit: commands from the host over a virtio serial port).
  install -m 0755 "$root_dir/ota/vm/agent/perch-vm-agent" "$r/usr/lib/perch/perch-vm-agent"
  install -m 0644 "$root_dir/ota/vm/agent/perch-vm-agent.service" "$r/usr/lib/systemd/system/"
  # grub.cfg loads /boot/vmlinuz and /boot/initrd.img of the slot (Debian links them at / by default).
  local kver
  kver=$(ls "$r/usr/lib/modules")
  ln -sf "vmlinuz-$kver" "$r/boot/vmlinuz"
  ln -sf "initrd.img-$kver" "$r/boot/initrd.img"
  printf 'PERCH_RELEASE=%s\nPERCH_VARIANT=%s\n' "$version" "$variant" >"$r/etc/perch-release"
  echo perch-vm >"$r/etc/hostname"
  : >"$r/etc/machine-id"
  cat >"$r/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=en* eth*
[Network]
DHCP=ipv4
EOF
  chroot "$r" systemd-sysusers
  local gid
  gid=$(chroot "$r" getent group perch | cut -d: -f3)
  # The root slot stays read-only; state lives on the data partition, GRUB's files on the ESP (group perch
  # may write there: the health gate and the installer write the grubenv).
  cat >"$r/etc/fstab" <<EOF
PARTLABEL=data  /var/lib/perch  ext4   defaults,noatime  0  2
PARTLABEL=boot  /boot/efi       vfat   gid=$gid,dmask=0007,fmask=0117,flush  0  0
tmpfs           /tmp            tmpfs  mode=1777,nosuid,nodev  0  0
tmpfs           /var/tmp        tmpfs  mode=1777,nosuid,nodev  0  0
EOF
  chroot "$r" systemctl enable perch.service perch-ota-install.path perch-reboot.path perch-vm-agent.service systemd-networkd.service >/dev/null
  # No login on the box: the serial console shows boot output only.
  # Nobody logs in to the box. logind runs (systemctl reboot asks it) with its state directory made here,
  # as the root slot is read-only.
  mkdir -p "$r/var/lib/systemd/linger"
  chroot "$r" systemctl mask serial-getty@ttyS0.service getty@tty1.service e2scrub_reap.service >/dev/null
  case "$variant" in
    good) ;;
    gate-fail) sed -i 's/^golden_labels = .*/golden_labels = ["dog", "giraffe"]/' "$r/etc/perch/perch.toml" ;;
    crash-loop) echo 'this_key_does_not_exist = 1' >>"$r/etc/perch/perch.toml" ;;
    hang)
      # Waits until systemd has armed the watchdog, then one spinner per CPU starves everything else,
      # PID 1 included: only the hardware watchdog can end this boot.
      cat >"$r/usr/lib/systemd/system/perch-vm-hang.service" <<'EOF'
[Unit]
Description=VM test release: wedge userspace (busy loops at top real-time priority)
After=sysinit.target
[Service]
ExecStartPre=/bin/sh -c 'until [ -e /dev/watchdog0 ]; do sleep 0.2; done; sleep 5'
ExecStartPre=/usr/sbin/sysctl -q kernel.sched_rt_runtime_us=-1
ExecStart=/bin/sh -c 'for i in $(seq $(nproc)); do chrt -f 99 sh -c "while :; do :; done" & done; wait'
[Install]
WantedBy=multi-user.target
EOF
      chroot "$r" systemctl enable perch-vm-hang.service >/dev/null ;;
    *) echo "build.sh: unknown variant $variant (good, gate-fail, crash-loop, hang)" >&2; exit 2 ;;
  esac
}

# Makes the ext4 image $2 of the tree $1: as small as its files allow, plus room for the journal.
make_ext4() {
  local kib
  kib=$(du -sk --apparent-size "$1" | cut -f1)
  kib=$(( (kib * 115 / 100 + 32768) / 4 * 4 ))
  mke2fs -q -F -t ext4 -L perch-root -d "$1" "$2" "${kib}k"
}

slot_mib=1024
declare -A built
build_release() {
  local name=$1 version=$2 variant=$3 tree
  tree=$work/$name
  make_tree "$tree" "$version" "$variant"
  make_ext4 "$tree" "$out/$name.ext4"
  rm -rf "$tree"
  local size
  size=$(stat -c %s "$out/$name.ext4")
  [ "$size" -le $((slot_mib << 20)) ] || { echo "build.sh: $name is $size bytes, more than a $slot_mib MiB slot" >&2; exit 1; }
  built[$name]=$size
}

build_release base 1.0.0 good
for spec in "${releases[@]}"; do
  name=${spec%%=*} rest=${spec#*=}
  build_release "$name" "${rest%%:*}" "${rest#*:}"
done

# --- the boot partition: GRUB for UEFI, the shipped grub.cfg, the factory grubenv -------------------------
esp=$work/esp.img
mkfs.vfat -C -n BOOT "$esp" $((32 * 1024)) >/dev/null
cat >"$work/early.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
EOF
grub-mkimage -O x86_64-efi -o "$work/BOOTX64.EFI" -p /EFI/perch -c "$work/early.cfg" \
  part_gpt fat ext2 normal linux echo test regexp loadenv probe reboot configfile serial terminal efi_gop all_video gzio
grub-editenv "$work/grubenv" create
grub-editenv "$work/grubenv" set BOOT_ORDER=A BOOT_A_LEFT=0 PERCH_A_OK=1 BOOT_B_LEFT=0 PERCH_B_OK=0
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/perch
mcopy -i "$esp" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$root_dir/ota/boot/grub.cfg" "$work/grubenv" ::/EFI/perch/

# --- the disk: boot, data, rootA, rootB --------------------------------------------------------------------
data_mib=1536
data=$work/data.ext4
mke2fs -q -F -t ext4 -L perch-data "$data" "${data_mib}M"
disk=$out/disk.img
rm -f "$disk"
truncate -s $(( (1 + 32 + data_mib + 2 * slot_mib + 1) << 20 )) "$disk"
sfdisk -q "$disk" <<EOF
label: gpt
start=1MiB, size=32MiB, type=uefi, name=boot
size=${data_mib}MiB, type=linux, name=data
size=${slot_mib}MiB, type=linux, name=rootA
size=${slot_mib}MiB, type=linux, name=rootB
EOF
put() { dd if="$1" of="$disk" bs=1M seek="$2" conv=notrunc,sparse status=none; }
put "$esp" 1
put "$data" $((1 + 32))
put "$out/base.ext4" $((1 + 32 + data_mib))

cat >"$out/vm.env" <<EOF
# Written by ota/vm/build.sh.
PERCH_VM_DISK=$disk
PERCH_VM_SLOT_MIB=$slot_mib
PERCH_VM_COMPATIBLE=perch-vm-x86
EOF
for n in "${!built[@]}"; do echo "release $n: $out/$n.ext4 (${built[$n]} bytes)"; done
echo "disk: $disk"
