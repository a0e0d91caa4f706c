# Stand-in for OpenWrt's $(TOPDIR)/rules.mk and include/package.mk, used
# only by scripts/lint-packaging.sh: it checks that the package Makefile
# parses and defines what the feed's build needs, without an OpenWrt tree.
INSTALL_DIR := install -d -m0755
INSTALL_BIN := install -m0755
INSTALL_CONF := install -m0600
INSTALL_DATA := install -m0644
# The lint points these at the source tree and at the host-built binaries.
PKG_BUILD_DIR ?= /build/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_DIR ?= $(PKG_BUILD_DIR)/.pkgdir

define BuildPackage
$(foreach v,Package/$(1) Package/$(1)/description Package/$(1)/install,\
  $(if $(value $(v)),,$(error $(v) is not defined)))
lint-packages += $(1)
endef
