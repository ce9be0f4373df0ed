#!/usr/bin/env bash
# The self-contained demo: converts a built-in sample layer to eStargz and zstd:chunked, inspects,
# verifies and extracts it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec swift run stargz demo "$@"
