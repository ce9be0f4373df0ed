#!/usr/bin/env bash
# The long runs of issue 14, as scripts (the suite runs a short version of each):
#   scripts/soak.sh [SECONDS]          the load test for SECONDS (default 1800): one stargz-store, ten images,
#                                      50 reader processes and podman runs, again and again; it fails on a wrong
#                                      byte, a reader stuck past its bound, or anonymous memory past its bound
#   scripts/soak.sh faults [READS]     the registry fault runs with READS reads at 10 % faults (default 100000)
#                                      and READS/5 at 50 %, /metrics checked against the proxy's counts
# Root (FUSE mounts, podman). Prints the figures the tests print ("load: …", "faults 10 %: …").
set -euo pipefail
main() {
  cd "$(dirname "$0")/.."
  scripts/deps.sh
  swift build --build-tests
  if [ "${1:-}" = faults ]; then
    reads=${2:-100000}
    STARGZ_FAULT_READS=$reads STARGZ_FAULT_READS_50=$((reads / 5)) \
      swift test --skip-build --filter 'MeasuredTests/(tenPercent|fiftyPercent)'
  else
    STARGZ_SOAK_S=${1:-1800} swift test --skip-build --filter 'MeasuredTests/fiftyReaders'
  fi
}
main "$@"
