SUMMARY = "perch: edge video analytics appliance"
SUMMARY:${PN}-jetson = "perch: device access to the Jetson GPU and media engines"
DESCRIPTION = "Decodes camera streams with GStreamer, detects objects with ONNX Runtime \
               (TensorRT, CUDA or CPU), tracks them into events published over MQTT, records clips, \
               and updates itself from signed A/B bundles."
AUTHOR = "perch developers"
HOMEPAGE = "https://github.com/perch-edge/perch"
BUGTRACKER = "https://github.com/perch-edge/perch/issues"
SECTION = "multimedia"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# gstreamer-rs finds GStreamer with pkg-config at build time (>= 1.14: no v1_xx features enabled).
DEPENDS = "glib-2.0 gstreamer1.0 gstreamer1.0-plugins-base"

PV = "0.1.0+git"

SRC_URI = "git://github.com/perch-edge/perch.git;protocol=https;branch=main"
# The crates of Cargo.lock, fetched in do_fetch (kept in step with Cargo.lock by tests/packaging.rs).
require perch-crates.inc

# A release pins its commit: set PERCH_SRCREV in the distro or local.conf.
PERCH_SRCREV ??= "${AUTOREV}"
SRCREV = "${PERCH_SRCREV}"
S = "${WORKDIR}/git"

inherit cargo_bin pkgconfig systemd useradd features_check

REQUIRED_DISTRO_FEATURES = "systemd"
# Native builds have no systemd in their DISTRO_FEATURES; the host tool needs none.
REQUIRED_DISTRO_FEATURES:class-native = ""

CVE_PRODUCT = "perch"

# Offline and pinned: cargo takes the crates bitbake unpacked ("cargo_home/bitbake", with their checksums)
# instead of crates.io, and refuses to change Cargo.lock.
CARGO_BUILD_FLAGS:append = " --frozen"

PERCH_ORT_LIBRARY ??= "${libdir}/libonnxruntime.so.1"

do_configure:append() {
    printf '\n[source.crates-io]\nreplace-with = "bitbake"\n\n[source.bitbake]\ndirectory = "%s"\n' \
        "${CARGO_HOME}/bitbake" >> ${CARGO_HOME}/config
}

do_install:append() {
    overlay="${S}/overlay"
    install -d ${D}${sysconfdir}/perch/ota-keys
    install -m 0644 ${overlay}/etc/perch/perch.toml ${D}${sysconfdir}/perch/perch.toml

    install -d ${D}${systemd_system_unitdir}/perch.service.d
    for unit in perch.service perch-ota-install.service perch-ota-install.path perch-reboot.service perch-reboot.path; do
        install -m 0644 ${overlay}/usr/lib/systemd/system/${unit} ${D}${systemd_system_unitdir}/${unit}
    done
    install -m 0644 ${overlay}/usr/lib/systemd/system/perch.service.d/jetson.conf ${D}${systemd_system_unitdir}/perch.service.d/jetson.conf
    # ONNX Runtime comes from its own recipe, which installs it in libdir rather than /usr/lib/perch.
    printf '[Service]\nEnvironment=ORT_DYLIB_PATH=%s\n' "${PERCH_ORT_LIBRARY}" > ${D}${systemd_system_unitdir}/perch.service.d/onnxruntime.conf

    install -d ${D}${nonarch_libdir}/tmpfiles.d ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/systemd/journald.conf.d
    install -d ${D}${nonarch_libdir}/systemd/system.conf.d
    install -m 0644 ${overlay}/usr/lib/systemd/system.conf.d/perch-watchdog.conf ${D}${nonarch_libdir}/systemd/system.conf.d/perch-watchdog.conf
    install -m 0644 ${overlay}/usr/lib/tmpfiles.d/perch.conf ${D}${nonarch_libdir}/tmpfiles.d/perch.conf
    install -m 0644 ${overlay}/usr/lib/sysusers.d/perch.conf ${D}${nonarch_libdir}/sysusers.d/perch.conf
    install -m 0644 ${overlay}/usr/lib/systemd/journald.conf.d/perch.conf ${D}${nonarch_libdir}/systemd/journald.conf.d/perch.conf
    install -d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${overlay}/usr/lib/udev/rules.d/70-perch.rules ${D}${nonarch_base_libdir}/udev/rules.d/70-perch.rules

    install -d ${D}${datadir}/perch/models ${D}${docdir}/perch/ota
    install -m 0644 ${S}/models/yolox_nano.toml ${D}${datadir}/perch/models/yolox_nano.toml
    install -m 0644 ${S}/README.md ${D}${docdir}/perch/README.md
    install -m 0644 ${S}/ota/README.md ${D}${docdir}/perch/ota/README.md
}

# Same user and groups as overlay/usr/lib/sysusers.d/perch.conf (used on hand-installed boxes).
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system video; --system render; --system perch-ota"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/perch --no-create-home \
                       --shell ${base_sbindir}/nologin --user-group --groups video,render perch"

# The install and reboot services are started by their path units, never enabled themselves.
SYSTEMD_SERVICE:${PN} = "perch.service perch-ota-install.path perch-reboot.path"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

PACKAGES =+ "${PN}-jetson"

FILES:${PN} += "${systemd_system_unitdir} \
                ${nonarch_libdir}/tmpfiles.d \
                ${nonarch_libdir}/sysusers.d \
                ${nonarch_libdir}/systemd/journald.conf.d \
                ${nonarch_libdir}/systemd/system.conf.d \
                ${nonarch_base_libdir}/udev/rules.d \
               "
FILES:${PN}-jetson += "${systemd_system_unitdir}/perch.service.d/jetson.conf"

CONFFILES:${PN} = "${sysconfdir}/perch/perch.toml"

# What perch's pipelines instantiate at run time: uridecodebin/decodebin, appsink, videorate, videoscale,
# videoconvert, test patterns; RTSP with RTP depayloaders; MP4 files and V4L2 cameras; parsers and the
# timestamper used when recording by copy; libubootenv's tools for the uboot OTA backend; ONNX Runtime
# (meta-tegra-community on Jetson with the CUDA/TensorRT providers, or another layer's CPU build).
RDEPENDS:${PN} = "gstreamer1.0-plugins-bad-codectimestamper \
                  gstreamer1.0-plugins-bad-videoparsersbad \
                  gstreamer1.0-plugins-base-app \
                  gstreamer1.0-plugins-base-playback \
                  gstreamer1.0-plugins-base-typefindfunctions \
                  gstreamer1.0-plugins-base-videoconvertscale \
                  gstreamer1.0-plugins-base-videorate \
                  gstreamer1.0-plugins-base-videotestsrc \
                  gstreamer1.0-plugins-good-isomp4 \
                  gstreamer1.0-plugins-good-rtp \
                  gstreamer1.0-plugins-good-rtpmanager \
                  gstreamer1.0-plugins-good-rtsp \
                  gstreamer1.0-plugins-good-udp \
                  gstreamer1.0-plugins-good-video4linux2 \
                  libubootenv-bin \
                  onnxruntime \
                 "
# Jetson: NVDEC and the NVMM converter from meta-tegra.
RDEPENDS:${PN}-jetson = "${PN} gstreamer1.0-plugins-nvvidconv gstreamer1.0-plugins-nvvideo4linux2"

# The native perch builds and signs OTA bundles on the build host (perch bundle build/sign).
BBCLASSEXTEND = "native"
