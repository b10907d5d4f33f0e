#!/usr/bin/env bash
# Sets up this machine, builds Xerotier (release) and starts the whole platform with `xerotier up`.
# Extra arguments go to `xerotier up` (e.g. --workers 4, --engine sim).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release --product xerotier
exec .build/release/xerotier up "$@"
