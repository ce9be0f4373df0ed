#!/usr/bin/env bash
# Builds a libFuzzer target (Fuzz/) with the fuzzer and address sanitizers and runs it.
#   scripts/fuzz.sh TARGET [SECONDS] [LIBFUZZER-FLAGS...]    TARGET: FuzzTOC or FuzzLayer; SECONDS default 600
#   scripts/fuzz.sh [SECONDS]                                 FuzzTOC, as before
# e.g. scripts/fuzz.sh FuzzLayer 1800, or scripts/fuzz.sh FuzzLayer 1800 -fork=1 -ignore_crashes=1
# Corpus: .build-fuzz/corpus/TARGET (seeded on first use: FuzzLayer writes its own seed blobs, built from tars
# made in code with our EStargzWriter; the reference fixtures in Tests/Fixtures are added). Findings (crash-*, oom-*,
# timeout-*, slow-unit-*) land in fuzz-artifacts/TARGET/; the run's log in .build-fuzz/logs/.
# A huge allocation (-malloc_limit_mb) or a memory blow-up (-rss_limit_mb) is reported as a finding.
set -euo pipefail
# All in one function, so that bash has read the whole script before the long run (an edit meanwhile is harmless).
main() {
  cd "$(dirname "$0")/.."
  target=FuzzTOC
  if [ $# -gt 0 ] && ! [[ $1 =~ ^[0-9]+$ ]]; then target=$1; shift; fi
  secs=${1:-600}
  [ $# -gt 0 ] && shift
  case $target in FuzzTOC|FuzzLayer) ;; *) echo "unknown target $target (FuzzTOC, FuzzLayer)" >&2; exit 2 ;; esac
  scripts/deps.sh
  # The build plan is cached with the main package's file list: a source file added there since the last run
  # would be left out (seen: the FUSE codec's files). Planning again costs a second.
  rm -f .build-fuzz/debug.yaml
  swift build --package-path Fuzz -c debug --scratch-path .build-fuzz --product "$target" \
    -Xswiftc -sanitize=fuzzer,address >&2
  bin=.build-fuzz/debug/$target
  corpus=.build-fuzz/corpus/$target
  artifacts=fuzz-artifacts/$target
  logs=.build-fuzz/logs
  mkdir -p "$corpus" "$artifacts" "$logs"
  fix=Tests/Fixtures/estargz
  case $target in
  FuzzTOC)
    if [ -d "$fix" ]; then
      for f in "$fix"/*.esgz "$fix"/*.zstdchunked; do   # mode 0: whole blobs (small ones)
        [ "$(stat -c %s "$f")" -lt 2000000 ] && { printf '\x00'; cat "$f"; } > "$corpus/blob-$(basename "$f")"
      done
      for f in "$fix"/*.toc.json; do { printf '\x01'; cat "$f"; } > "$corpus/toc-$(basename "$f")"; done
      for f in "$fix"/*.esgz; do { printf '\x02'; tail -c 64 "$f"; } > "$corpus/footer-$(basename "$f")"; done
      { printf '\x03'; head -c 20000 "$fix/kitchen-sink.tar"; } > "$corpus/tar-kitchen-sink"
    fi
    flags=(-max_len=2000000 -rss_limit_mb=4096 -malloc_limit_mb=1024 -timeout=20)
    ;;
  FuzzLayer)
    ls "$corpus"/seed-* >/dev/null 2>&1 || FUZZ_LAYER_WRITE_SEEDS="$corpus" "$bin"
    export FUZZ_LAYER_SEED_DIR=$corpus   # the mutator starts again from these when an input no longer decodes
    if [ -d "$fix" ]; then
      for f in "$fix"/*.esgz; do
        [ "$(stat -c %s "$f")" -lt 2000000 ] && cp "$f" "$corpus/fixture-$(basename "$f")"
      done
    fi
    # -detect_leaks=0: the Swift runtime's per-thread allocations show as leaks; growth shows in -rss_limit_mb.
    flags=(-max_len=4000000 -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=30 -detect_leaks=0)
    ;;
  esac
  # libFuzzer prints the stack of a trap itself; Swift's backtracer in an ASan process adds a false ASan report
  # and can linger holding the output open.
  export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=no}
  log=$logs/$target-$(date +%Y%m%d-%H%M%S).log
  echo "fuzzing $target for $secs s; log $log" >&2
  set +e
  "$bin" "$corpus" -max_total_time="$secs" "${flags[@]}" -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" \
    > "$log" 2>&1
  rc=$?
  set -e
  echo "== $target: exit $rc after $secs s"
  grep -E '^stat::' "$log" || true
  # The last coverage line (plain and -fork runs print them differently).
  grep -E 'cov: [0-9]+' "$log" | tail -1 || true
  echo "corpus: $(find "$corpus" -type f | wc -l) files, $(du -sh "$corpus" | cut -f1)"
  n=$(find "$artifacts" -type f | wc -l)
  echo "findings in $artifacts: $n"
  find "$artifacts" -type f -printf '  %TY-%Tm-%Td %TH:%TM  %s bytes  %p\n' 2>/dev/null | sort | tail -20
  grep -E '^==[0-9]+==ERROR|^SUMMARY|Fatal error|invariant violated|out-of-memory|malloc\(|Test unit written' "$log" | sort | uniq -c | sort -rn | head -20 || true
}
main "$@"
exit 0
