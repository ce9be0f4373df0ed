#!/usr/bin/env bash
# Writes the reference fixtures in Tests/Fixtures/estargz with the project's oracle (refgen: Go estargz v0.12.0 from
# Debian's sources), following Tests/Fixtures/estargz/recipes.txt: each OUTPUT blob, OUTPUT.json (the reference's
# tocDigest, diffID, compressedSize) and, for gzip blobs, OUTPUT.toc.json (the TOC, pretty-printed).
# The output is deterministic; FixtureProvenanceTests rebuilds every blob and compares it byte for byte.
#   usage: fixtures.sh [DIR]      DIR defaults to Tests/Fixtures/estargz
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
dir=${1:-$repo/Tests/Fixtures/estargz}
refgen=${REFGEN:-$repo/.build/refgen/refgen}
[ -x "$refgen" ] || { mkdir -p "$(dirname "$refgen")"; "$here/build.sh" "$refgen"; }
grep -v '^#' "$dir/recipes.txt" | while read -r out in args; do
  [ -n "$out" ] || continue
  # shellcheck disable=SC2086 # the options are words
  "$refgen" build "$dir/$in" "$dir/$out" $args >/dev/null
  case "$args" in
    *zstd*) ;;
    *) python3 - "$dir/$out" >"$dir/$out.toc.json" <<'PY'
import gzip, io, json, sys, tarfile, zlib
blob = open(sys.argv[1], "rb").read()
# eStargz footer: the last 51 bytes, a gzip member whose extra field holds the TOC offset as 16 hex digits + "STARGZ".
footer = blob[-51:]
offset = int(footer[16:32], 16)
toc_tar = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(blob[offset:])
with tarfile.open(fileobj=io.BytesIO(toc_tar)) as t:
    toc = json.load(t.extractfile("stargz.index.json"))
sys.stdout.write(json.dumps(toc, indent=1, ensure_ascii=False))
PY
    ;;
  esac
  echo "wrote $dir/$out" >&2
done
