# Stand-in for the feed's lang/rust/rust-package.mk (see rules.mk here).
RUST_ARCH_DEPENDS := @(aarch64||arm||mips||mipsel||x86_64)
define Build/Compile/Cargo
	cargo install --root $(PKG_INSTALL_DIR) --path "$(PKG_BUILD_DIR)/$(strip $(1))"
endef
