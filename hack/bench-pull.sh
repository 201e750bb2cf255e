#!/usr/bin/env bash
# Compares pull+unpack of a ~200 MiB, 6-layer gzip image: berthd against
# Debian's containerd (ctr pull unpacks into the overlayfs snapshotter), in one
# run, from the same registry on loopback, each with a fresh root every round.
#
#   hack/bench-pull.sh (as root) [ROUNDS] [SIZE_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
size=${2:-200}
hack/install-deps.sh
command -v containerd >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd >/dev/null; }
export PATH=/usr/local/go/bin:$PATH

work=$(mktemp -d /tmp/berth-bench-pull.XXXXXX)
pids=()
# unmount_under unmounts everything at or below $1, deepest first, so that
# nothing is deleted through a live mount.
unmount_under() {
	awk -v d="$1" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m"; done
}
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	unmount_under "$work"
	rm -rf "$work"
}
trap cleanup EXIT

hack/build.sh "$work/bin" >/dev/null
go build -o "$work/bin/testregistry" ./hack/testregistry
port=$((20000 + RANDOM % 20000))
"$work/bin/testregistry" -addr "127.0.0.1:$port" -large-mb "$size" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do grep -q serving "$work/registry.log" && break; sleep 0.2; done
ref="127.0.0.1:$port/library/large:latest"

now() { date +%s.%N; }

for round in $(seq 1 "$rounds"); do
	# containerd
	d="$work/ctrd-$round"
	mkdir -p "$d"
	cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/c.sock"
TOML
	containerd --config "$d/config.toml" >"$d/log" 2>&1 &
	cpid=$!
	for _ in $(seq 1 100); do [ -S "$d/c.sock" ] && break; sleep 0.1; done
	t0=$(now)
	ctr -a "$d/c.sock" images pull --plain-http "$ref" >/dev/null
	t1=$(now)
	kill "$cpid"; wait "$cpid" 2>/dev/null || true
	unmount_under "$d"
	rm -rf "$d"

	# berthd
	b="$work/berth-$round"
	mkdir -p "$b"
	"$work/bin/berthd" --root "$b/root" --state "$b/state" --socket "$b/b.sock" >"$b/log" 2>&1 &
	bpid=$!
	for _ in $(seq 1 100); do [ -S "$b/b.sock" ] && break; sleep 0.1; done
	t2=$(now)
	"$work/bin/berth" --host "unix://$b/b.sock" pull "$ref" >/dev/null
	t3=$(now)
	kill "$bpid"; wait "$bpid" 2>/dev/null || true
	unmount_under "$b"
	rm -rf "$b"

	printf 'round %d: containerd %.2f s  berth %.2f s\n' "$round" "$(echo "$t1 - $t0" | bc)" "$(echo "$t3 - $t2" | bc)"
done
