#!/usr/bin/env bash
# Benchmarks (numbers and ratios, never pass/fail):
#   1. conversion of a realistic tar (a tar of /usr, or $BENCH_TAR) vs the reference Go estargz.Build
#      (`refgen build`) at the same level and chunk size, on all cores; time and compressed size ratios
#   2. chunk decompression throughput, libdeflate vs zlib, MB/s of output per core
#   3. TOC parse time and bytes held per entry for a 50,000-entry TOC
#   4. range reads of 4 KiB … 4 MiB from a local docker-registry: our client vs curl on a kept-alive connection
#   5. registry→registry conversion of a ~300 MB, 3-layer image vs converting the same tar.gz files locally
#   6. a file read through a lazy FUSE mount: warm throughput vs local disk (page cache dropped), cold read time vs
#      its compressed bytes over a 20 MB/s link plus one round trip, resident memory of `stargz mount`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
work=${BENCH_DIR:-/var/tmp/stargz-bench}
mkdir -p "$work"
swift build -c release --product stargz >&2
[ "$(id -u)" = 0 ] || echo "warning: the mount benchmark needs root (mount(2), drop_caches)" >&2
swift build -c release --package-path Benchmarks --scratch-path .build-bench >&2
refgen=.build/refgen/refgen
[ -x "$refgen" ] || { mkdir -p .build/refgen; bash scripts/testing/refgen/build.sh "$refgen"; }
tarball=${BENCH_TAR:-$work/usr.tar}
if [ ! -f "$tarball" ]; then
  # A realistic mix: executables, shared objects, many small Python files (about 420 MB).
  tar -C / -cf "$tarball" usr/bin usr/sbin usr/lib/python3.11 usr/lib/gcc 2>/dev/null || true
fi
size=$(stat -c %s "$tarball")
echo "== conversion: $tarball, $((size >> 20)) MiB, $(nproc) cores, gzip level 9, 4 MiB chunks"
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN{printf "%.2f", b-a}'; }
calc() { awk "BEGIN{printf \"%.3f\", $1}"; }
sync; cat "$tarball" > /dev/null
ours=$(t .build/release/stargz convert "$tarball" "$work/ours.esgz")
ref=$(t "$refgen" build "$tarball" "$work/ref.esgz" level=9 chunk=4194304)
os=$(stat -c %s "$work/ours.esgz"); rs=$(stat -c %s "$work/ref.esgz")
echo "stargz-swift: ${ours} s, $os bytes"
echo "reference:    ${ref} s, $rs bytes"
echo "time ratio (ours/reference): $(calc "$ours / $ref")   (goal <= 0.5)"
echo "size ratio (ours/reference): $(calc "$os / $rs")   (goal within 1 %)"
echo "throughput: ours $(calc "$size / $ours / 1000000") MB/s, reference $(calc "$size / $ref / 1000000") MB/s of tar"
"$refgen" verify "$work/ours.esgz" > "$work/verify.txt" && echo "reference accepts our blob: $(cat "$work/verify.txt")"
echo
echo "== chunk decompression (one core)"
.build-bench/release/EStargzBench inflate "$work/ours.esgz"
echo
echo "== TOC parse and memory"
.build-bench/release/EStargzBench toc 50000
echo
echo "== range reads from a local docker-registry (ours vs curl)"
.build-bench/release/RegistryBench ranges
echo
echo "== registry→registry conversion vs local conversion"
for spec in "l1:usr/lib/python3.11 usr/sbin" "l2:usr/lib/gcc" "l3:usr/share/doc usr/lib/x86_64-linux-gnu/perl-base"; do
  name=${spec%%:*}; dirs=${spec#*:}
  # shellcheck disable=SC2086
  [ -f "$work/$name.tar" ] || tar -C / -cf "$work/$name.tar" $dirs 2>/dev/null || true
done
BENCH_DIR=$work .build-bench/release/RegistryBench convert "$work/l1.tar" "$work/l2.tar" "$work/l3.tar"
echo
echo "== lazy mount (FUSE): warm and cold reads, resident memory"
.build-bench/release/RegistryBench mount "${BENCH_FILE:-/usr/bin/podman}" "$PWD/.build/release/stargz"
