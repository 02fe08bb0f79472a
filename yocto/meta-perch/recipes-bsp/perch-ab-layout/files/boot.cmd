# SPDX-License-Identifier: Apache-2.0
# perch A/B boot script (U-Boot), compiled into boot.scr by perch-ab-layout.
#
# The logic of ota/README.md ("Bootloaders"), written out per slot because U-Boot's shell cannot expand
# nested names like ${BOOT_${s}_LEFT}: in BOOT_ORDER, the first slot that passed perch's health gate
# (PERCH_x_OK=1) boots as it is; a slot on trial boots while it has tries left, spending one. perch reads
# the chosen slot from perch.slot= on the kernel command line and writes these variables with fw_setenv.
# Slots: rootA is partition 3, rootB partition 4 (perch-ab.wks.in); kernel and device tree in /boot.

setenv bootslot
for s in ${BOOT_ORDER}; do
  if test "x${bootslot}" = "x"; then
    if test "x${s}" = "xA"; then
      if test "x${PERCH_A_OK}" = "x1"; then
        setenv bootslot A
      elif test ${BOOT_A_LEFT} -gt 0; then
        setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
        setenv bootslot A
      fi
    elif test "x${s}" = "xB"; then
      if test "x${PERCH_B_OK}" = "x1"; then
        setenv bootslot B
      elif test ${BOOT_B_LEFT} -gt 0; then
        setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
        setenv bootslot B
      fi
    fi
  fi
done

if test "x${bootslot}" = "x"; then
  # Nothing bootable by the rules: perch never leaves the environment like this (a committed slot keeps
  # PERCH_x_OK=1), so this is a damaged environment. Boot the factory slot rather than stop.
  echo "perch: no bootable slot in BOOT_ORDER=${BOOT_ORDER}, booting slot A"
  setenv bootslot A
fi
echo "perch: booting slot ${bootslot} (BOOT_ORDER=${BOOT_ORDER} A: ok=${PERCH_A_OK} left=${BOOT_A_LEFT} B: ok=${PERCH_B_OK} left=${BOOT_B_LEFT})"
# Only the spent try needs saving; with CONFIG_ENV_WRITEABLE_LIST only the boot variables are stored.
saveenv

if test "${bootslot}" = "B"; then setenv rootpart 4; else setenv rootpart 3; fi
part uuid ${devtype} ${devnum}:${rootpart} rootuuid
setenv bootargs "${bootargs} root=PARTUUID=${rootuuid} rootfstype=ext4 rootwait perch.slot=${bootslot}"
test -n "${kernel_image}" || setenv kernel_image Image
# A slot whose kernel or device tree does not load, or does not start, must not leave the board at a
# prompt nobody answers: reset, so the next try (already spent above) or the other slot runs.
if load ${devtype} ${devnum}:${rootpart} ${kernel_addr_r} /boot/${kernel_image}; then
  if load ${devtype} ${devnum}:${rootpart} ${fdt_addr_r} /boot/${fdtfile}; then
    booti ${kernel_addr_r} - ${fdt_addr_r}
  fi
fi
echo "perch: slot ${bootslot} did not boot; resetting"
reset
