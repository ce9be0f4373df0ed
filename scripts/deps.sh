#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need (idempotent; quiet when all are present).
set -euo pipefail
pkgs=(pkg-config zlib1g-dev libdeflate-dev libzstd-dev zstd gzip
      # a real registry for the registry tests, and htpasswd for its basic auth
      docker-registry apache2-utils openssl python3 curl
      # podman end-to-end tests: podman, runc (crun fails on hybrid cgroups here), a static busybox for test images
      podman runc busybox-static skopeo fuse3
      # deploy tests: systemd-analyze verify on the unit, PyYAML to read the manifests back
      systemd python3-yaml
      # the reference oracle (scripts/testing/refgen/build.sh) builds from Debian's Go sources
      golang-go golang-github-containerd-stargz-snapshotter-dev golang-github-klauspost-compress-dev
      golang-github-vbatts-tar-split-dev golang-github-opencontainers-go-digest-dev
      golang-github-pkg-errors-dev golang-golang-x-sync-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
