#!/usr/bin/env bash
# Make sure a base image for the node image exists and print its name (the only line on stdout).
#
#   1. BASE_IMAGE (default python:3.11-slim) is already in the engine: use it.
#   2. `docker pull` gets it within PULL_TIMEOUT seconds: use it.
#   3. otherwise use onionlab/base:bookworm-HASH, building it first when the engine does not have it:
#      debootstrap a minimal Debian bookworm (python3 + venv, iproute2, iptables, ca-certificates, tor) from
#      DEBIAN_MIRROR and `docker import` it. No registry is involved, only Debian's package mirror.
#      HASH is a hash of the suite and the package list, also kept in the image's label
#      org.onionlab.base.recipe: a base made from another list (an older one without tor, say) is never
#      reused for this one, it is rebuilt.
#
# Progress goes to stderr. Environment: BASE_IMAGE, PULL_TIMEOUT (default 20), DEBIAN_MIRROR,
# FALLBACK_IMAGE (default onionlab/base:bookworm-HASH), REBUILD_BASE=1 (rebuild the fallback even if it
# exists).
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
PULL_TIMEOUT=${PULL_TIMEOUT:-20}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# tor: Debian's stock tor, which `python -m nodes tor` runs for nodes with `impl: tor`
PACKAGES=python3,python3-venv,iproute2,iptables,ca-certificates,tor
RECIPE="debootstrap minbase $SUITE: $PACKAGES"
RECIPE_LABEL=org.onionlab.base.recipe
RECIPE_HASH=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
FALLBACK_IMAGE=${FALLBACK_IMAGE:-onionlab/base:$SUITE-$RECIPE_HASH}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DEB_CACHE=$REPO/.cache/debs  # downloaded .debs, so a rebuild after `docker system prune` is quick

say() { echo "build-base: $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
recipe_of() { docker image inspect -f "{{index .Config.Labels \"$RECIPE_LABEL\"}}" "$1" 2>/dev/null; }

if [[ ${REBUILD_BASE:-0} != 1 ]]; then
    if have_image "$BASE_IMAGE"; then
        say "$BASE_IMAGE is present"
        echo "$BASE_IMAGE"
        exit 0
    fi
    if [[ $BASE_IMAGE != "$FALLBACK_IMAGE" ]]; then
        say "pulling $BASE_IMAGE (at most ${PULL_TIMEOUT}s)"
        if timeout "$PULL_TIMEOUT" docker pull -q "$BASE_IMAGE" >&2 2>/dev/null; then
            echo "$BASE_IMAGE"
            exit 0
        fi
        say "cannot pull $BASE_IMAGE; using $FALLBACK_IMAGE"
    fi
    if have_image "$FALLBACK_IMAGE"; then
        if [[ $(recipe_of "$FALLBACK_IMAGE") == "$RECIPE" ]]; then
            say "$FALLBACK_IMAGE is present"
            echo "$FALLBACK_IMAGE"
            exit 0
        fi
        say "$FALLBACK_IMAGE was made from another package list: rebuilding"
    fi
fi

if ! command -v debootstrap >/dev/null; then
    [[ $(id -u) == 0 ]] || { say "debootstrap is missing: apt-get install debootstrap (as root)"; exit 1; }
    say "installing debootstrap"
    "$REPO/images/node/apt-install.sh" debootstrap  # waits while another apt holds the dpkg lock
fi
[[ $(id -u) == 0 ]] || { say "debootstrap needs root to build $FALLBACK_IMAGE"; exit 1; }

work=$(mktemp -d /var/tmp/onionlab-base.XXXXXX)
rootfs=$work/rootfs
cleanup() {
    # debootstrap mounts /proc and /sys in the chroot; never let rm cross into them
    local m
    for m in $(grep -o " $rootfs/[^ ]*" /proc/mounts | sort -r || true); do umount -l "$m" || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

mkdir -p "$DEB_CACHE" "$rootfs"
echo '*' >"$REPO/.cache/.gitignore"
say "debootstrap $SUITE (minbase + $PACKAGES) from $DEBIAN_MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$DEB_CACHE" \
    "$SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    say "debootstrap failed (log above)"
    exit 1
}

say "trimming the root file system"
chroot "$rootfs" apt-get clean
# later `apt-get install`s in derived images keep docs, man pages and translations out too
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-onionlab-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
EOF
echo "deb $DEBIAN_MIRROR $SUITE main" >"$rootfs/etc/apt/sources.list"
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/usr/share/lintian "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
# Docker provides these at run time; the host's copies must not end up in the image
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"
: >"$rootfs/etc/machine-id"

say "importing $FALLBACK_IMAGE"
tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL org.opencontainers.image.title="onionlab base: Debian bookworm minbase + python3 + tor"' \
    --change "LABEL $RECIPE_LABEL=\"$RECIPE\"" \
    --change 'CMD ["/bin/bash"]' \
    - "$FALLBACK_IMAGE" >&2
say "$FALLBACK_IMAGE: $(docker image inspect -f '{{.Size}}' "$FALLBACK_IMAGE" | numfmt --to=iec) "
echo "$FALLBACK_IMAGE"
