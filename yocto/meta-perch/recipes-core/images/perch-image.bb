SUMMARY = "perch appliance image: A/B root filesystems and a shared data partition"
DESCRIPTION = "A systemd image running perch. The wic image is flashed once at the factory; the ext4 \
               image of the same build is what goes into OTA bundles (perch bundle build --image rootfs=...)."
AUTHOR = "perch developers"
HOMEPAGE = "https://github.com/perch-edge/perch"
BUGTRACKER = "https://github.com/perch-edge/perch/issues"
SECTION = "images"
LICENSE = "MIT"

CVE_PRODUCT = "perch"

IMAGE_INSTALL = "packagegroup-core-boot \
                 perch \
                 perch-ab-layout \
                 ${PERCH_JETSON_INSTALL} \
                 ${CORE_IMAGE_EXTRA_INSTALL} \
                "

# Jetson machines (meta-tegra's "tegra" override): the GPU/media device list and NVIDIA's GStreamer plugins.
PERCH_JETSON_INSTALL = "${@'perch-jetson' if 'tegra' in d.getVar('MACHINEOVERRIDES').split(':') else ''}"

inherit core-image features_check

REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_FSTYPES = "ext4 wic"
WKS_FILE = "perch-ab.wks.in"
WKS_FILE_DEPENDS:append = " perch-ab-layout"
IMAGE_BOOT_FILES = "boot.scr"
# boot.scr and the environment image are deployed files, taken by wic from DEPLOY_DIR_IMAGE.
do_rootfs[depends] += "perch-ab-layout:do_deploy"
