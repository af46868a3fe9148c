#!/usr/bin/env bash
# apt-get install PACKAGE... for the image build (debootstrap) and CI: waits for another apt or dpkg (a boot's
# unattended-upgrades, a second build) to let go of the dpkg lock instead of failing at once, and runs
# `apt-get update` and tries again when the package lists are missing or stale. Needs root. Output on stderr.
#
# Environment: APT_LOCK_TIMEOUT, the seconds to wait for the lock (default 600).
set -euo pipefail
[[ $# -gt 0 ]] || { echo "usage: $0 [APT-GET OPTION...] PACKAGE..." >&2; exit 2; }

apt() {
    DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT:-600}" "$@" >&2
}
apt install -y -q "$@" || { apt update -q && apt install -y -q "$@"; }
