SUMMARY = "Multicast firmware updates for fleets of Linux devices"
DESCRIPTION = "firmcast-agent listens at boot for a signed firmware image \
               sent once over IP multicast to a whole fleet, writes it to flash \
               (MTD, in place or to the inactive U-Boot A/B slot) and exits. \
               firmcast-cli holds the operator's command (keygen, manifest, \
               send, repair, status)."
HOMEPAGE = "https://example.invalid/firmcast"
BUGTRACKER = "https://example.invalid/firmcast/issues"
SECTION = "admin"
CVE_PRODUCT = "firmcast"
LICENSE = "MIT | Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=9;endline=9;md5=86b31c7756a1a7962f28b62856ed4f05"

PV = "0.1.0+git"

SRC_URI = "git://example.invalid/firmcast.git;protocol=https;branch=main"
SRCREV = "9d97e517f0b339b1c425220a785adde7a7b5c048"

# UNPACKDIR from styhead on; scarthgap unpacks into WORKDIR.
S = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}/git"

inherit cargo cargo-update-recipe-crates systemd update-rc.d

require ${BPN}-crates.inc

# The workspace root's Cargo.toml and Cargo.lock; only the two binaries.
do_compile() {
    oe_cargo_build -p firmcast-agent --bin firmcast-agent -p firmcast-server --bin firmcast
}

do_install() {
    install -d ${D}${sbindir} ${D}${bindir}
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/firmcast-agent ${D}${sbindir}/
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/firmcast ${D}${bindir}/

    install -d ${D}${sysconfdir}/firmcast ${D}${sysconfdir}/sysctl.d
    install -m 0644 ${S}/packaging/files/agent.toml ${D}${sysconfdir}/firmcast/agent.toml
    install -m 0644 ${S}/packaging/files/firmcast.sysctl.conf ${D}${sysconfdir}/sysctl.d/50-firmcast.conf

    install -d ${D}${mandir}/man1 ${D}${mandir}/man8
    install -m 0644 ${S}/packaging/man/firmcast*.1 ${D}${mandir}/man1/
    install -m 0644 ${S}/packaging/man/firmcast-agent.8 ${D}${mandir}/man8/
    install -d ${D}${datadir}/bash-completion/completions
    install -m 0644 ${S}/packaging/completions/firmcast.bash ${D}${datadir}/bash-completion/completions/firmcast
    install -d ${D}${datadir}/zsh/site-functions ${D}${datadir}/fish/vendor_completions.d
    install -m 0644 ${S}/packaging/completions/_firmcast ${D}${datadir}/zsh/site-functions/
    install -m 0644 ${S}/packaging/completions/firmcast.fish ${D}${datadir}/fish/vendor_completions.d/

    # The same init files as the Buildroot package: they background the
    # agent, so the boot does not wait for the update window.
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}
        install -m 0644 ${S}/packaging/buildroot/package/firmcast/firmcast.service ${D}${systemd_system_unitdir}/
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -d ${D}${sysconfdir}/init.d
        install -m 0755 ${S}/packaging/buildroot/package/firmcast/S80firmcast ${D}${sysconfdir}/init.d/firmcast
    fi
}

PACKAGES =+ "${PN}-cli ${PN}-cli-bash-completion"

FILES:${PN}-cli += "${bindir}/firmcast ${datadir}/zsh ${datadir}/fish"
FILES:${PN}-cli-bash-completion += "${datadir}/bash-completion"
RDEPENDS:${PN}-cli-bash-completion = "bash-completion"

CONFFILES:${PN} = "${sysconfdir}/firmcast/agent.toml"

SYSTEMD_SERVICE:${PN} = "firmcast.service"
INITSCRIPT_NAME = "firmcast"
INITSCRIPT_PARAMS = "defaults 80"
