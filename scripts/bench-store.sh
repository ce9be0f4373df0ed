#!/usr/bin/env bash
# Benchmark of the stargz-store daemon with real Podman (numbers and ratios, never pass/fail; needs root):
#   start = `podman pull` + `podman run IMAGE python3 -c 'import json; print(1)'` to its first output line,
#   for the plain gzip image and for its eStargz conversion served lazily by stargz-store, median of $RUNS (3);
#   the bytes the registry sent before that first output; the daemon's VmHWM after the run.
# The registry sits behind a shaped link: its own network namespace, a veth pair with a tbf qdisc of 200 Mbit/s on
# both ends (this kernel has no netem), and a TCP proxy that delays each direction by 10 ms. The image is a
# debootstrap'd Debian (bookworm, from the configured apt mirror) in one layer plus python3 in a second, about 88 MB
# compressed, converted without a profile. Graphroot on a tmpfs; store root and page cache emptied before each run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
[ "$(id -u)" = 0 ] || { echo "bench-store.sh needs root (netns, tbf, mount)" >&2; exit 1; }
scripts/deps.sh
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
work=${BENCH_DIR:-/var/tmp/stargz-bench}/store
runs=${RUNS:-3}
rate=${RATE:-200mbit}
delay_ms=${DELAY_MS:-10}
mkdir -p "$work"
if [ "${BUILD:-1}" = 1 ]; then
  swift build -c release --product stargz --static-swift-stdlib >&2
  swift build -c release --product stargz-store --static-swift-stdlib >&2
fi
stargz=$repo/.build/release/stargz
store=$repo/.build/release/stargz-store

# --- the image: Debian + python3, two layers ---------------------------------------------------------------------
if [ ! -f "$work/layer2.tar" ]; then
  echo "== building the image rootfs (debootstrap bookworm, then python3 in an overlay)" >&2
  rm -rf "$work/rootfs" "$work/upper" "$work/ovl-work" "$work/merged"
  debootstrap bookworm "$work/rootfs" "${MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1
  chroot "$work/rootfs" apt-get clean
  rm -rf "$work/rootfs/var/lib/apt/lists/"*
  mkdir -p "$work/upper" "$work/ovl-work" "$work/merged"
  mount -t overlay overlay -o "lowerdir=$work/rootfs,upperdir=$work/upper,workdir=$work/ovl-work" "$work/merged"
  mount --bind /proc "$work/merged/proc"
  chroot "$work/merged" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends python3 >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*' >"$work/python.log" 2>&1 \
    || { umount "$work/merged/proc"; umount "$work/merged"; echo "python3 install failed: $work/python.log" >&2; exit 1; }
  umount "$work/merged/proc"
  umount "$work/merged"
  tar --numeric-owner -C "$work/rootfs" -cf "$work/layer1.tar.tmp" . && mv "$work/layer1.tar.tmp" "$work/layer1.tar"
  tar --numeric-owner -C "$work/upper" -cf "$work/layer2.tar.tmp" . && mv "$work/layer2.tar.tmp" "$work/layer2.tar"
fi
if [ ! -f "$work/plain-layout/index.json" ]; then
  rm -rf "$work/plain-layout"
  python3 scripts/testing/ocilayout.py "$work/plain-layout" plain "$work/layer1.tar" "$work/layer2.tar" >/dev/null
fi

# --- the shaped link -----------------------------------------------------------------------------------------------
ns=stargz-bench
host_if=sgbench0
ns_if=sgbench1
pids=()
graph=$work/graph
storemnt=$work/store-mnt
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  grep -o " $graph/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  for m in "$storemnt" "$graph"; do if mountpoint -q "$m" 2>/dev/null; then umount -l "$m"; fi; done
  ip link del "$host_if" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  true
}
trap cleanup EXIT
cleanup
ip netns add "$ns"
ip -n "$ns" link set lo up
ip link add "$host_if" type veth peer name "$ns_if"
ip link set "$ns_if" netns "$ns"
ip addr add 10.231.0.1/30 dev "$host_if"
ip -n "$ns" addr add 10.231.0.2/30 dev "$ns_if"
ip link set "$host_if" up
ip -n "$ns" link set "$ns_if" up
tc qdisc add dev "$host_if" root tbf rate "$rate" burst 64kb latency 50ms
ip netns exec "$ns" tc qdisc add dev "$ns_if" root tbf rate "$rate" burst 64kb latency 50ms

rm -rf "$work/registry"
cat >"$work/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: 10.231.0.2:5000}
EOF
ip netns exec "$ns" docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
python3 -u scripts/testing/delayproxy.py 127.0.0.1:0 10.231.0.2:5000 --delay-ms "$delay_ms" >"$work/proxy.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/proxy.out" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/listening on/ {print $3}' "$work/proxy.out")
registry=127.0.0.1:$port
curl -sf --retry 50 --retry-connrefused --retry-delay 0 "http://$registry/v2/" >/dev/null
echo "== link: $rate each way, ${delay_ms} ms each way; registry $registry (in netns $ns)" >&2

skopeo copy -q --dest-tls-verify=false "oci:$work/plain-layout:plain" "docker://$registry/bench/python:plain" >&2
"$stargz" image convert --insecure-registry "$registry" "$registry/bench/python:plain" "$registry/bench/python:esgz" >&2

cat >"$work/store.toml" <<EOF
${STORE_TOML:-}
[[resolver.host."$registry".mirrors]]
host = "$registry"
insecure = true
EOF

rx() { cat "/sys/class/net/$host_if/statistics/rx_bytes"; }
now() { date +%s.%N; }

# One start: fresh graphroot (tmpfs) and, for eStargz, a fresh store. Prints "seconds bytes vmhwm_kB".
start_once() {
  local tag=$1 storepid="" conf=$work/storage.conf
  mkdir -p "$graph" && mount -t tmpfs -o size=2g tmpfs "$graph"
  mkdir -p "$graph/root" "$graph/run"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/root"\nrunroot = "%s/run"\n' "$graph" "$graph" >"$conf"
  if [ "$tag" = esgz ]; then
    rm -rf "$work/store-root"; mkdir -p "$storemnt"
    printf '[storage.options]\nadditionallayerstores = ["%s:ref"]\n' "$storemnt" >>"$conf"
    env ${STORE_ENV:-} "$store" -config "$work/store.toml" -log-level=debug -root "$work/store-root" "$storemnt" 2>"$work/store-$2.log" &
    storepid=$!
    pids+=("$storepid")
    for _ in $(seq 200); do mountpoint -q "$storemnt" && break; sleep 0.05; done
  fi
  sync; echo 3 >/proc/sys/vm/drop_caches
  export CONTAINERS_STORAGE_CONF=$conf
  local rx0 t0 t1 rx1 tp
  rx0=$(rx); t0=$(now)
  podman pull -q --tls-verify=false "$registry/bench/python:$tag" >/dev/null
  tp=$(now)
  [ -n "$storepid" ] && grep -E 'VmHWM|RssAnon' "/proc/$storepid/status" | tr '\n' ' ' >"$work/store-$2.afterpull"
  podman run --rm --pull=never --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --net=none \
    "$registry/bench/python:$tag" python3 -c 'import json; print(1)' | {
      IFS= read -r line; echo "$(now) $(rx) $line" >"$work/first"; cat >/dev/null; }
  read -r t1 rx1 line <"$work/first"
  [ "$line" = 1 ] || { echo "unexpected output: $line" >&2; exit 1; }
  local hwm=0
  if [ -n "$storepid" ]; then
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$storepid/status")
    { grep -E 'VmHWM|VmRSS|RssAnon|RssFile' "/proc/$storepid/status"
      awk '/^[0-9a-f]+-/ {name=$6} /^Rss:/ {rss[name]+=$2} END {for (n in rss) if (rss[n]>500) print rss[n], n}' \
        "/proc/$storepid/smaps" | sort -rn; } >"$work/store-$2.mem"
  fi
  podman rmi -a -f >/dev/null 2>&1 || true
  if [ -n "$storepid" ]; then kill -TERM "$storepid"; wait "$storepid" 2>/dev/null || true; fi
  grep -o " $graph/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  umount -l "$graph"
  unset CONTAINERS_STORAGE_CONF
  awk -v a="$t0" -v b="$t1" -v p="$tp" -v r0="$rx0" -v r1="$rx1" -v h="$hwm" \
    'BEGIN{printf "%.3f %d %d %.3f %.3f\n", b-a, r1-r0, h, p-a, b-p}'
}

median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
declare -A secs bytes hwms
for tag in ${KINDS:-plain esgz}; do
  for i in $(seq "$runs"); do
    start_once "$tag" "$i" >"$work/result"
    read -r s b h sp sr <"$work/result"
    echo "$tag run $i: start ${s} s (pull ${sp} s, run ${sr} s), ${b} bytes from the registry before the first output, VmHWM ${h} kB" >&2
    secs[$tag]+="$s "; bytes[$tag]+="$b "; hwms[$tag]+="$h "
  done
done
ms() { tr ' ' '\n' | grep . | median; }
echo "== start (pull + run to first output), median of $runs"
for tag in ${KINDS:-plain esgz}; do
  label=$([ "$tag" = plain ] && echo "plain gzip:       " || echo "eStargz via store:")
  s=$(echo "${secs[$tag]}" | ms); b=$(echo "${bytes[$tag]}" | ms)
  echo "$label   ${s} s, $(awk -v b="$b" 'BEGIN{printf "%.1f", b/1e6}') MB from the registry before the first output"
done
if [ -n "${secs[plain]:-}" ] && [ -n "${secs[esgz]:-}" ]; then
  echo "ratio eStargz/plain: $(awk -v a="$(echo "${secs[esgz]}" | ms)" -v b="$(echo "${secs[plain]}" | ms)" 'BEGIN{printf "%.2f", a/b}')  (goal <= 0.25)"
fi
if [ -n "${hwms[esgz]:-}" ]; then
  hwm=$(echo "${hwms[esgz]}" | tr ' ' '\n' | grep . | sort -n | tail -1)
  echo "stargz-store VmHWM:  $(awk -v h="$hwm" 'BEGIN{printf "%.1f", h/1024}') MiB (largest of the runs; goal <= 30 MB)"
fi
