#!/usr/bin/env bash
# Installs what berth and its tests need on a Debian machine. Idempotent: does
# nothing (not even apt-get update) when everything is already there.
set -euo pipefail

packages=(
	containernetworking-plugins # CNI reference plugins (bridge, host-local, portmap, loopback)
	busybox-static              # test images are built from it, offline
	iptables                    # used by the bridge (ipMasq) and portmap plugins
	iproute2                    # ip netns / ip link, used by tests
	iputils-ping                # reachability checks in tests
	libseccomp-dev              # seccomp filters in berth-shim (cgo)
	gcc                         # cgo: berth-shim's namespace-joining constructor
	procps                      # ps/pgrep in leak checks
	runc                        # an extra OCI runtime handler, tested beside berth's own
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -gt 0 ]; then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 || { echo "install-deps: Go is required (expected at /usr/local/go)" >&2; exit 1; }
