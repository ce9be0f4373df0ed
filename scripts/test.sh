#!/usr/bin/env bash
# Runs every test: installs what is missing, builds the release tarball (scripts/release.sh; ReleaseTests checks
# it), and runs `swift test`. With arguments (e.g. --filter X) the release is not built first: ReleaseTests then
# builds it itself if it is selected. STARGZ_RELEASE_TARBALL=PATH tests that tarball instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
if [ $# -eq 0 ] && [ -z "${STARGZ_RELEASE_TARBALL:-}" ]; then
  start=$(date +%s)
  STARGZ_RELEASE_TARBALL=$(scripts/release.sh)
  export STARGZ_RELEASE_TARBALL
  echo "release built in $(( $(date +%s) - start )) s: $STARGZ_RELEASE_TARBALL" >&2
fi
exec swift test "$@"
