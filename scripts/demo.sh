#!/usr/bin/env bash
# The lazy-pulling demo (needs root): Podman starts a container from a plain gzip image (a normal pull) and from
# its eStargz conversion served by stargz-store (a lazy pull), and shows how long each took and how many bytes the
# registry sent. Everything runs on this machine, without internet:
#   - a local registry (docker-registry) on 127.0.0.1, behind a small TCP proxy that counts the bytes it sends;
#   - a two-layer image built from host files: a static busybox, then the Python standard library, /usr/share/doc
#     and /demo/hello.txt (tens of MB), pushed as plain gzip and converted with `stargz image convert`;
#   - `podman pull` + `podman run IMAGE cat /demo/hello.txt`, each with an empty graphroot; for the eStargz image
#     storage.conf names stargz-store as an Additional Layer Store, so only what `cat` reads is fetched.
# The format-only demo (no root, no registry) is `swift run stargz demo`.
# Environment: STARGZ_BIN_DIR=DIR uses DIR/stargz and DIR/stargz-store instead of building them;
# DEMO_DATA="DIR ..." replaces the host directories copied into the image; PODMAN_RUN_FLAGS (see below).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
[ "$(id -u)" = 0 ] || { echo "demo.sh needs root (FUSE mount, podman overlay storage): run it with sudo" >&2; exit 1; }

# --- 1. the tools: scripts/deps.sh installs the project's Debian packages (podman, runc, fuse3, docker-registry, ...)
missing() {
  local need=() t
  for t in podman:podman runc:runc fusermount3:fuse3 docker-registry:docker-registry python3:python3 \
           skopeo:skopeo curl:curl; do command -v "${t%%:*}" >/dev/null || need+=("${t#*:}"); done
  [ -x /bin/busybox ] || need+=(busybox-static)
  echo "${need[*]}"
}
if [ -z "${STARGZ_BIN_DIR:-}" ] || [ -n "$(missing)" ]; then scripts/deps.sh || true; fi
if [ -n "$(missing)" ]; then echo "demo.sh needs: apt-get install $(missing)" >&2; exit 1; fi
[ -c /dev/fuse ] || { echo "/dev/fuse is missing: apt-get install fuse3 and modprobe fuse" >&2; exit 1; }

# --- 2. the binaries
if [ -n "${STARGZ_BIN_DIR:-}" ]; then
  bin=$STARGZ_BIN_DIR
else
  echo "== building stargz and stargz-store (release)" >&2
  swift build -c release --product stargz >&2
  swift build -c release --product stargz-store >&2
  bin=$repo/.build/release
fi
stargz=$bin/stargz
store=$bin/stargz-store
for b in "$stargz" "$store"; do [ -x "$b" ] || { echo "$b is missing" >&2; exit 1; }; done

# Podman on this kind of machine: crun fails here and setrlimit is denied, so runc and fixed ulimits.
# Set PODMAN_RUN_FLAGS="" (or anything else) where podman's defaults work.
PODMAN_RUN_FLAGS=${PODMAN_RUN_FLAGS---runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024}

# --- the work dir, a tmpfs (fast to fill and to drop), and its cleanup on every exit -------------------------------
tmpbase=${TMPDIR:-/tmp}
unmount_under() {   # $1 and every mount below it, deepest first
  grep -oE " $1(/[^ ]*)? " /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
}
# A run killed with SIGKILL cannot clean up: end its processes (listed in DIR.pids, checked by their command line)
# and drop its mounts (a dead FUSE mount makes podman hang).
# The first line of DIR.pids is the run's own shell: a run that is still going is left alone.
for d in "$tmpbase"/stargz-demo.*; do
  [ -d "$d" ] || continue
  owner=$(head -n 1 "$d.pids" 2>/dev/null || true)
  if [ -n "$owner" ] && [ -d "/proc/$owner" ] && grep -qF demo.sh "/proc/$owner/cmdline" 2>/dev/null; then continue; fi
  while read -r p; do grep -qF "$d/" "/proc/$p/cmdline" 2>/dev/null && kill -9 "$p"; done <"$d.pids" 2>/dev/null || true
  unmount_under "$d"; rmdir "$d" 2>/dev/null || true; rm -f "$d.pids"
done
tmp=$(mktemp -d "$tmpbase/stargz-demo.XXXXXX")
echo "$$" >"$tmp.pids"
pids=()
track() { pids+=("$1"); echo "$1" >>"$tmp.pids"; }   # a background process to end on exit
cleanup() {
  local rc=$? f conf p
  set +e
  if [ "$rc" != 0 ]; then
    for f in "$tmp"/*.log; do [ -s "$f" ] && { echo "--- $f"; grep -v 'blob unknown' "$f" | tail -n 15; }; done >&2
  fi
  # Containers left by an interrupted `podman run` (conmon is not our child), while the store still answers.
  for conf in "$tmp"/graph-*/storage.conf; do
    [ -f "$conf" ] && CONTAINERS_STORAGE_CONF=$conf timeout 30 podman rm -af -t 0 >/dev/null 2>&1
  done
  { for p in "${pids[@]}"; do kill -9 "$p"; done; wait; } 2>/dev/null   # registry, proxy, stargz-store
  unmount_under "$tmp"       # podman's overlay and shm mounts, the store's FUSE mount, then the tmpfs itself
  if grep -q " $tmp[/ ]" /proc/mounts; then echo "still mounted under $tmp: not removing it" >&2
  else rm -rf --one-file-system "$tmp" "$tmp.pids"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mount -t tmpfs -o size=4g,mode=0700 stargz-demo "$tmp"

# --- 3. the registry, and the proxy in front of it that counts the bytes the registry sends -----------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/registry.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $tmp/registry}}
http: {addr: 127.0.0.1:$port}
EOF
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
track $!
cat >"$tmp/countproxy.py" <<'EOF'
# TCP proxy to 127.0.0.1:PORT; counts the bytes sent back to clients. Prints "PROXY_PORT STATS_PORT" when ready;
# a connection to STATS_PORT reads the running total.
import asyncio, sys
target, total = int(sys.argv[1]), 0
async def pipe(reader, writer, count):
    global total
    while data := await reader.read(1 << 16):
        if count:
            total += len(data)
        writer.write(data)
        await writer.drain()
async def handle(cr, cw):
    try:
        ur, uw = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        return cw.close()
    tasks = [asyncio.ensure_future(pipe(cr, uw, False)), asyncio.ensure_future(pipe(ur, cw, True))]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)   # HTTP: one side closing ends the exchange
    for t in tasks:
        t.cancel()
    uw.close(); cw.close()
async def stats(r, w):
    w.write(b"%d\n" % total); await w.drain(); w.close()
async def main():
    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    stat = await asyncio.start_server(stats, "127.0.0.1", 0)
    print(proxy.sockets[0].getsockname()[1], stat.sockets[0].getsockname()[1], flush=True)
    await asyncio.gather(proxy.serve_forever(), stat.serve_forever())
asyncio.run(main())
EOF
python3 -u "$tmp/countproxy.py" "$port" >"$tmp/proxy.out" 2>"$tmp/proxy.log" &
track $!
for _ in $(seq 100); do [ -s "$tmp/proxy.out" ] && break; sleep 0.1; done
read -r proxy_port stats_port <"$tmp/proxy.out"
registry=127.0.0.1:$port                    # pushes and conversion go here directly (not counted)
counted=127.0.0.1:$proxy_port               # podman and stargz-store pull through the counting proxy
curl -sf --retry 50 --retry-connrefused --retry-delay 0 --retry-max-time 20 "http://$registry/v2/" >/dev/null
fetched() { local n; read -r n </dev/tcp/127.0.0.1/"$stats_port"; echo "$n"; }
echo "== registry on $registry, counting proxy on $counted" >&2

# --- 4. the image: busybox (layer 1), then tens of MB of host files and /demo/hello.txt (layer 2) ------------------
pystd=""
for d in /usr/lib/python3.[0-9]*; do [ -d "$d" ] && { pystd=$d; break; }; done    # Python's stdlib, if any
data=${DEMO_DATA:-"$pystd /usr/share/doc"}
echo "== building the image from /bin/busybox and $data" >&2
mkdir -p "$tmp/base/bin" "$tmp/base/etc" "$tmp/base/usr/lib" "$tmp/base/usr/share" "$tmp/data/demo"
cp /bin/busybox "$tmp/base/bin/"
for l in sh cat ls head echo; do ln -s busybox "$tmp/base/bin/$l"; done
echo 'NAME="stargz-swift demo"' >"$tmp/base/etc/os-release"
echo "hello from /demo/hello.txt" >"$tmp/data/demo/hello.txt"
tar --numeric-owner -C "$tmp/base" -cf "$tmp/layer1.tar" .
# shellcheck disable=SC2086  # $data is a list of directories
tar --numeric-owner -cf "$tmp/layer2.tar" -C "$tmp/data" demo -C / $(for d in $data; do echo "${d#/}"; done)
python3 scripts/testing/ocilayout.py "$tmp/layout" plain "$tmp/layer1.tar" "$tmp/layer2.tar" >/dev/null
rm -f "$tmp/layer1.tar" "$tmp/layer2.tar"
image=demo/lazy
skopeo copy -q --dest-tls-verify=false "oci:$tmp/layout:plain" "docker://$registry/$image:plain" >&2
echo "== converting $registry/$image:plain to eStargz ($image:esgz)" >&2
"$stargz" image convert --insecure-registry "$registry" "$registry/$image:plain" "$registry/$image:esgz" >&2
# The compressed size of an image: the sum of its layers in the manifest.
size() {
  curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://$registry/v2/$image/manifests/$1" | python3 -c 'import json, sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))'
}

# --- 5./6. one start: empty graphroot, for esgz a fresh stargz-store; pull + run to the first output line ----------
now() { date +%s.%N; }
start_once() {
  local tag=$1 graph=$tmp/graph-$1 storepid="" b0 t0 tp t1 b1 line
  mkdir -p "$graph/root" "$graph/run"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/root"\nrunroot = "%s/run"\n' "$graph" "$graph" >"$graph/storage.conf"
  if [ "$tag" = esgz ]; then
    # stargz-store mounts the layer namespace at store-mnt; storage.conf names it as an Additional Layer Store.
    printf '[[resolver.host."%s".mirrors]]\nhost = "%s"\ninsecure = true\n' "$counted" "$counted" >"$tmp/store.toml"
    printf '[storage.options]\nadditionallayerstores = ["%s:ref"]\n' "$tmp/store-mnt" >>"$graph/storage.conf"
    mkdir -p "$tmp/store-mnt"
    "$store" -config "$tmp/store.toml" -root "$tmp/store-root" "$tmp/store-mnt" 2>"$tmp/store.log" &
    storepid=$!
    track "$storepid"
    for _ in $(seq 200); do mountpoint -q "$tmp/store-mnt" && break; sleep 0.05; done
    mountpoint -q "$tmp/store-mnt" || { echo "stargz-store did not mount $tmp/store-mnt" >&2; exit 1; }
  fi
  export CONTAINERS_STORAGE_CONF=$graph/storage.conf
  b0=$(fetched); t0=$(now)
  podman pull -q --tls-verify=false "$counted/$image:$tag" >/dev/null
  tp=$(now)
  # shellcheck disable=SC2086  # PODMAN_RUN_FLAGS is a list of flags
  podman run --rm --pull=never $PODMAN_RUN_FLAGS --net=none "$counted/$image:$tag" cat /demo/hello.txt | {
    IFS= read -r line; echo "$(now) $(fetched) $line" >"$tmp/first"; cat >/dev/null; }
  read -r t1 b1 line <"$tmp/first"
  [ "$line" = "hello from /demo/hello.txt" ] || { echo "unexpected output: $line" >&2; exit 1; }
  echo "== $tag: the container printed: $line" >&2
  unset CONTAINERS_STORAGE_CONF
  awk -v a="$t0" -v p="$tp" -v b="$t1" -v n=$((b1 - b0)) 'BEGIN {printf "%.2f %.2f %.2f %d\n", b-a, p-a, b-p, n}'
}

start_once plain >"$tmp/plain.result"
start_once esgz >"$tmp/esgz.result"

mb() { awk -v b="$1" 'BEGIN {printf "%.1f MB", b / 1e6}'; }
echo
printf '%-36s %-30s %-26s %s\n' image "start (pull + run to output)" "fetched from the registry" "image size (compressed)"
for tag in plain esgz; do
  read -r s sp sr n <"$tmp/$tag.result"
  label=$([ "$tag" = plain ] && echo "$image:plain (gzip, normal pull)" || echo "$image:esgz (eStargz, lazy)")
  printf '%-36s %-30s %-26s %s\n' "$label" "$s s (pull $sp, run $sr)" "$(mb "$n")" "$(mb "$(size "$tag")")"
done
