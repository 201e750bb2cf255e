#!/usr/bin/env bash
# Builds berthd, berth and berth-shim into _output/bin (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-_output/bin}
mkdir -p "$out"
go build -o "$out/berthd" ./cmd/berthd
go build -o "$out/berth" ./cmd/berth
go build -o "$out/berth-shim" ./cmd/berth-shim
# The monitor runs once per pod: no cgo keeps it small.
CGO_ENABLED=0 go build -o "$out/berth-monitor" ./cmd/berth-monitor
