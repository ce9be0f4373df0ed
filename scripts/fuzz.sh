#!/usr/bin/env bash
# Builds the libFuzzer target (Fuzz/) with the fuzzer and address sanitizers and runs it.
#   scripts/fuzz.sh [SECONDS]   (default 600)
# Seeds come from ../shared/fixtures; crashes land in fuzz-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
scripts/deps.sh
swift build --package-path Fuzz -c debug --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address >&2
bin=.build-fuzz/debug/FuzzTOC
corpus=.build-fuzz/corpus
mkdir -p "$corpus" fuzz-artifacts
fix=../shared/fixtures/estargz
if [ -d "$fix" ]; then
  for f in "$fix"/*.esgz "$fix"/*.zstdchunked; do   # mode 0: whole blobs (small ones)
    [ "$(stat -c %s "$f")" -lt 2000000 ] && { printf '\x00'; cat "$f"; } > "$corpus/blob-$(basename "$f")"
  done
  for f in "$fix"/*.toc.json; do { printf '\x01'; cat "$f"; } > "$corpus/toc-$(basename "$f")"; done
  for f in "$fix"/*.esgz; do { printf '\x02'; tail -c 64 "$f"; } > "$corpus/footer-$(basename "$f")"; done
  { printf '\x03'; head -c 20000 "$fix/kitchen-sink.tar"; } > "$corpus/tar-kitchen-sink"
fi
exec "$bin" "$corpus" -max_total_time="$secs" -max_len=2000000 -rss_limit_mb=4096 -timeout=20 \
  -artifact_prefix=fuzz-artifacts/ -print_final_stats=1
