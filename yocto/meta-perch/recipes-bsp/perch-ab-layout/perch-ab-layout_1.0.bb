# nooelint: oelint.var.bbclassextend - board-specific (MACHINE_ARCH): no native or nativesdk variant makes sense
SUMMARY = "perch A/B layout: U-Boot environment, boot script and data partition mount"
DESCRIPTION = "The bootloader side of perch's OTA (ota/README.md): fw_env.config for libubootenv, the \
               factory environment image written into the ubootenv partition, the A/B boot script \
               (U-Boot boot.scr, or GRUB's grub.cfg on x86), \
               and the mount of the data partition both slots share."
AUTHOR = "perch developers"
HOMEPAGE = "https://github.com/perch-edge/perch"
BUGTRACKER = "https://github.com/perch-edge/perch/issues"
SECTION = "bootloaders"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://boot.cmd;beginline=1;endline=1;md5=653b254f286b881bdce1d14afdede628"

DEPENDS = "u-boot-tools-native"

CVE_PRODUCT = "perch"

SRC_URI = "file://boot.cmd \
           file://grub.cfg \
           file://fw_env.config \
           file://perch-env.txt \
           file://var-lib-perch.mount \
          "

S = "${WORKDIR}"

inherit deploy kernel-arch systemd

# Offsets and the boot script depend on the board.
PACKAGE_ARCH = "${MACHINE_ARCH}"

# perch-env.txt is exactly what perch writes for a factory box (slot A proven, slot B empty):
# BootFlags::factory(A) through src/ota/boot.rs, checked by tests/packaging.rs. Both redundant copies are
# written, so either one alone is a valid environment.
PERCH_ENV_SIZE ?= "0x4000"

do_compile() {
    mkenvimage -r -s ${PERCH_ENV_SIZE} -o ${B}/perch-uboot-env-copy.bin ${S}/perch-env.txt
    cat ${B}/perch-uboot-env-copy.bin ${B}/perch-uboot-env-copy.bin > ${B}/perch-uboot-env.bin
    mkimage -A ${UBOOT_ARCH} -T script -C none -n "perch A/B boot" -d ${S}/boot.cmd ${B}/boot.scr
}

do_install() {
    install -d ${D}${sysconfdir} ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/fw_env.config ${D}${sysconfdir}/fw_env.config
    install -m 0644 ${S}/var-lib-perch.mount ${D}${systemd_system_unitdir}/var-lib-perch.mount
}

do_deploy() {
    install -m 0644 ${B}/perch-uboot-env.bin ${DEPLOYDIR}/perch-uboot-env.bin
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
    # x86 machines boot with GRUB instead: the same grub.cfg as the VM appliance (files/grub.cfg links to
    # ota/boot/grub.cfg), for the EFI system partition beside its grubenv.
    install -m 0644 ${S}/grub.cfg ${DEPLOYDIR}/perch-grub.cfg
}
addtask deploy after do_compile before do_build

SYSTEMD_SERVICE:${PN} = "var-lib-perch.mount"

FILES:${PN} += "${systemd_system_unitdir}/var-lib-perch.mount"
CONFFILES:${PN} = "${sysconfdir}/fw_env.config"
