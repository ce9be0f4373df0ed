#!/usr/bin/env bash
# Builds the release: dist/stargz-swift-<version>-linux-<arch>.tar.gz and dist/<same>.tar.gz.sha256.
#
#   scripts/release.sh [VERSION]        VERSION defaults to $STARGZ_VERSION, else the tag at HEAD (v stripped),
#                                       else 0.1.0-dev
#
# The tarball holds, at its top level (as upstream's release archives do, so the unit's download step takes
# `stargz-store` and `stargz-store-helper` from it):
#   stargz-store                    the executable
#   stargz -> stargz-store          a symlink: called as `stargz`, it is the stargz tool
#   stargz-store-helper             the additional-layer-store-auth-helper that registries.conf names: containers/image
#                                   runs it once per pull and it hands the pull's credentials to the store
#   config.toml                     the store's default config (`stargz-store config default`)
#   stargz-store.service            the systemd unit (`stargz deploy systemd-unit`, default paths)
#   LICENSE  VERSION
#
# The executables run on RHEL 9 / RHCOS 9 (glibc 2.34, GCC 11's libstdc++) and anything newer: the Swift runtime
# and Foundation are linked statically (--static-swift-stdlib), and so are zlib, libdeflate and libzstd (pkg-config
# is pointed at .pc files whose library directory holds only their .a files); the few symbols the runtime takes at a newer version are pinned to an
# older one (scripts/release/rhel9-symbols.c, linked with lld). What stays dynamic is glibc (libc, libm, ld-linux),
# libstdc++ and libgcc_s, with no run path. Tests/DeployTests/ReleaseTests.swift reads the ELF files and holds them to that.
#
# The build has its own scratch directory (.build-release), so it leaves the development build alone. The tarball's
# own layout is fixed (file times are the commit's, owners 0, names sorted, gzip -n); its bytes repeat for one commit,
# toolchain, checkout path and set of resolved dependency versions (Package.resolved is not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
scripts/deps.sh

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# Untracked files count: SwiftPM compiles any .swift file under Sources/.
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
tag=$(git describe --tags --exact-match 2>/dev/null || true)
version=${1:-${STARGZ_VERSION:-${tag#v}}}
version=${version:-0.1.0-dev}
case "$version" in *[!A-Za-z0-9._+-]*) echo "release.sh: version \"$version\" must be [A-Za-z0-9._+-]" >&2; exit 2 ;; esac
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac
name=stargz-swift-$version-linux-$arch
scratch=${RELEASE_SCRATCH:-$repo/.build-release}
mkdir -p "$scratch" dist

# The static C libraries, alone in a directory, and .pc files that name only it: SwiftPM puts pkg-config's -L
# first, so -lz -ldeflate -lzstd find the .a files before the system's .so files.
static=$scratch/static-libs
pcdir=$scratch/pkgconfig
mkdir -p "$static" "$pcdir"
for pair in z:zlib deflate:libdeflate zstd:libzstd; do
  l=${pair%%:*} pc=${pair#*:}
  a=""
  for d in "$(pkg-config --variable=libdir "$pc" 2>/dev/null)" "/usr/lib/$(uname -m)-linux-gnu" /usr/lib64 /usr/lib; do
    if [ -n "$d" ] && [ -f "$d/lib$l.a" ]; then a=$d/lib$l.a; break; fi
  done
  [ -n "$a" ] || { echo "release.sh: lib$l.a not found (it comes with $pc's -dev package)" >&2; exit 1; }
  ln -sf "$a" "$static/lib$l.a"
  printf 'Name: %s\nDescription: %s, static (scripts/release.sh)\nVersion: %s\nLibs: -L%s -l%s\nCflags: %s\n' \
    "$pc" "$pc" "$(pkg-config --modversion "$pc")" "$static" "$l" "$(pkg-config --cflags "$pc")" >"$pcdir/$pc.pc"
done
export PKG_CONFIG_PATH=$pcdir
clang -O2 -fPIC -c scripts/release/rhel9-symbols.c -o "$scratch/rhel9-symbols.o"

flags=(-c release --scratch-path "$scratch" --static-swift-stdlib --disable-local-rpath
       -Xswiftc -use-ld=lld
       -Xlinker "$scratch/rhel9-symbols.o")
for s in hypot hypotf _ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE; do flags+=(-Xlinker "--wrap=$s"); done
export STARGZ_VERSION=$version STARGZ_COMMIT=$commit
echo "== building stargz-store and stargz-store-helper $version ($commit)" >&2
swift build "${flags[@]}" --product stargz-store >&2
swift build "${flags[@]}" --product stargz-store-helper >&2
bin=$(swift build "${flags[@]}" --show-bin-path)

# The tree of the tarball. Debug info is stripped (the symbol table stays, for backtraces).
stage=$scratch/stage/$name
rm -rf "$scratch/stage"
mkdir -p "$stage"
for exe in stargz-store stargz-store-helper; do
  strip --strip-debug -o "$stage/$exe" "$bin/$exe"
  chmod 0755 "$stage/$exe"
done
ln -s stargz-store "$stage/stargz"
"$stage/stargz-store" config default >"$stage/config.toml"
"$stage/stargz" deploy systemd-unit >"$stage/stargz-store.service"
cp LICENSE "$stage/LICENSE"
printf '%s\ncommit %s\n' "$version" "$commit" >"$stage/VERSION"
chmod 0644 "$stage/config.toml" "$stage/stargz-store.service" "$stage/LICENSE" "$stage/VERSION"

epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
out=dist/$name.tar.gz
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" --format=gnu \
    -C "$stage" -cf - stargz-store stargz stargz-store-helper config.toml stargz-store.service LICENSE VERSION \
  | gzip -n -9 >"$out.tmp"
mv "$out.tmp" "$out"
(cd dist && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256.tmp" && mv "$name.tar.gz.sha256.tmp" "$name.tar.gz.sha256")
echo "$repo/$out"
echo "sha256 $(cut -d' ' -f1 "$out.sha256")  size $(stat -c %s "$out") bytes" >&2
