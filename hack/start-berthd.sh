#!/usr/bin/env bash
# README command (a): installs what is needed, builds and installs berth into
# /usr/local/bin, installs a default CNI network when none exists, and starts
# berthd with the default config. Logs go to /var/log/berthd.log.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
export PATH=/usr/local/go/bin:$PATH

hack/build.sh _output/bin
install -m 0755 _output/bin/berthd _output/bin/berth _output/bin/berth-shim _output/bin/berth-monitor /usr/local/bin/

conf_dir=/etc/cni/net.d
if ! ls "$conf_dir"/*.conf "$conf_dir"/*.conflist "$conf_dir"/*.json >/dev/null 2>&1; then
	mkdir -p "$conf_dir"
	/usr/local/bin/berthd config cni-default >"$conf_dir/10-berth.conflist"
	echo "installed the default CNI network: $conf_dir/10-berth.conflist"
fi

socket=/run/berth/berth.sock
if [ -S "$socket" ] && /usr/local/bin/berth version >/dev/null 2>&1; then
	echo "berthd is already running on unix://$socket"
	exit 0
fi
nohup /usr/local/bin/berthd >>/var/log/berthd.log 2>&1 </dev/null &
for _ in $(seq 1 100); do
	if /usr/local/bin/berth version >/dev/null 2>&1; then
		echo "berthd is running (pid $!) on unix://$socket; logs in /var/log/berthd.log"
		exit 0
	fi
	sleep 0.1
done
echo "berthd did not come up; see /var/log/berthd.log" >&2
tail -20 /var/log/berthd.log >&2 || true
exit 1
