# Included after the package Makefile by scripts/lint-packaging.sh.
$(foreach v,PKG_NAME PKG_VERSION PKG_RELEASE PKG_LICENSE PKG_MAINTAINER PKG_SOURCE_URL,\
  $(if $($(v)),,$(error $(v) is not set)))
$(if $(lint-packages),,$(error no BuildPackage call))

# `make -n lint-compile`: the cargo commands the feed would run.
lint-compile:
	$(call Build/Compile)

# `make lint-install STAGE=DIR`: each package's install recipe, for real.
lint-install: $(addprefix lint-install-,$(lint-packages))
lint-install-%:
	$(call Package/$*/install,$(STAGE)/$*)
