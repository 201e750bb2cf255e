#!/usr/bin/env bash
# README command (b): installs what is needed and runs the whole test suite
# (format and vet checks, unit tests, root integration and end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
export PATH=/usr/local/go/bin:$PATH

unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt: these files are not formatted:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
go test -count=1 -timeout 25m "$@" ./...
