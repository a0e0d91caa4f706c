################################################################################
#
# firmcast
#
################################################################################

FIRMCAST_VERSION = 0.1.0
FIRMCAST_SITE = https://example.invalid/firmcast.git
FIRMCAST_SITE_METHOD = git
FIRMCAST_LICENSE = Apache-2.0 or MIT

# One workspace, built from its root with its Cargo.lock; only the
# binaries asked for are compiled.
FIRMCAST_CARGO_BUILD_OPTS = -p firmcast-agent --bin firmcast-agent
ifeq ($(BR2_PACKAGE_FIRMCAST_OPERATOR_CLI),y)
FIRMCAST_CARGO_BUILD_OPTS += -p firmcast-server --bin firmcast
endif

FIRMCAST_BIN_DIR = $(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)

ifeq ($(BR2_PACKAGE_FIRMCAST_OPERATOR_CLI),y)
define FIRMCAST_INSTALL_OPERATOR_CLI
	$(INSTALL) -D -m 0755 $(FIRMCAST_BIN_DIR)/firmcast \
		$(TARGET_DIR)/usr/bin/firmcast
	$(INSTALL) -d $(TARGET_DIR)/usr/share/man/man1
	$(INSTALL) -m 0644 $(@D)/packaging/man/firmcast*.1 \
		$(TARGET_DIR)/usr/share/man/man1/
	$(INSTALL) -D -m 0644 $(@D)/packaging/completions/firmcast.bash \
		$(TARGET_DIR)/usr/share/bash-completion/completions/firmcast
endef
endif

# The agent goes to /usr/sbin (cargo install would put it in /usr/bin).
define FIRMCAST_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(FIRMCAST_BIN_DIR)/firmcast-agent \
		$(TARGET_DIR)/usr/sbin/firmcast-agent
	$(INSTALL) -D -m 0644 $(@D)/packaging/files/agent.toml \
		$(TARGET_DIR)/etc/firmcast/agent.toml
	$(INSTALL) -D -m 0644 $(@D)/packaging/files/firmcast.sysctl.conf \
		$(TARGET_DIR)/etc/sysctl.d/50-firmcast.conf
	$(INSTALL) -D -m 0644 $(@D)/packaging/man/firmcast-agent.8 \
		$(TARGET_DIR)/usr/share/man/man8/firmcast-agent.8
	$(FIRMCAST_INSTALL_OPERATOR_CLI)
endef

define FIRMCAST_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(FIRMCAST_PKGDIR)/S80firmcast \
		$(TARGET_DIR)/etc/init.d/S80firmcast
endef

define FIRMCAST_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(FIRMCAST_PKGDIR)/firmcast.service \
		$(TARGET_DIR)/usr/lib/systemd/system/firmcast.service
endef

$(eval $(cargo-package))
