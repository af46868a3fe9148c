#!/usr/bin/env bash
# Build onionlab/node:latest without a container registry.
#
#   1. build-base.sh picks the base image (python:3.11-slim if present or pullable, else
#      onionlab/base:bookworm-HASH, built from Debian packages, tor included, when missing).
#   2. The wheelhouse .cache/wheels is filled on the HOST with `pip download` of the node's runtime
#      dependencies (NODE_DEPS, versions from pyproject.toml), for the base's Python version, CPU and glibc;
#      it is reused while the requirements and the target are the same.
#   3. `docker build` with the repository as context (.dockerignore lets only nodes/ and the wheelhouse in);
#      nothing in the build touches the network, unless the base lacks tor (python:3.11-slim): then apt
#      installs Debian's.
#
#   4. The dependencies stage is built under a name of its own, DEPS_IMAGE: the legacy builder would leave it
#      as a dangling <none> image (about 160 MB, 30 MB of its own) after every build that changes it; named,
#      it is the next build's cache. Replaced builds of either image are removed, and so are dangling
#      dependency stages that an interrupted build left.
#
# Environment: IMAGE (default onionlab/node:latest), DEPS_IMAGE (default onionlab/node-deps:latest),
# BASE_IMAGE, PULL_TIMEOUT, DEBIAN_MIRROR (see build-base.sh), PYTHON (the host Python with pip, default:
# python3, else .venv/bin/python).
set -euo pipefail

IMAGE=${IMAGE:-onionlab/node:latest}
DEPS_IMAGE=${DEPS_IMAGE:-onionlab/node-deps:latest}
STAGE_LABEL=onionlab.build-stage=deps  # the Dockerfile's label on the dependencies stage
NODE_DEPS=(trio cryptography h11)  # what `nodes` imports; the orchestrator's pyyaml and docker stay out
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WHEELS=$REPO/.cache/wheels
cd "$REPO"

say() { echo "build-image: $*" >&2; }
started=$SECONDS

base=$(images/node/build-base.sh)

# The target's Python (major.minor) and the manylinux platform tags its glibc accepts.
read -r py_version platforms < <(docker run --rm --network none --entrypoint python3 "$base" -c '
import platform, sys
libc, version = platform.libc_ver()
if libc != "glibc":
    sys.exit(f"the base image has libc {libc!r}, not glibc: manylinux wheels will not do")
arch, minor = platform.machine(), int(version.split(".")[1])
tags = [f"manylinux_2_{m}_{arch}" for m in range(17, minor + 1)] + [f"manylinux2014_{arch}"]
print(f"{sys.version_info.major}.{sys.version_info.minor}", ",".join(tags))
')
[[ -n ${platforms:-} ]] || { say "could not ask $base for its Python version and platform"; exit 1; }

pick_python() {
    local p
    for p in "${PYTHON:-}" python3 .venv/bin/python; do
        [[ -n $p ]] && "$p" -m pip --version >/dev/null 2>&1 && { echo "$p"; return; }
    done
    say "no host Python with pip (set PYTHON, or run 'make venv')"
    return 1
}
python=$(pick_python)

# requirements.txt: the NODE_DEPS entries of pyproject.toml's dependencies, verbatim
requirements=$("$python" - "${NODE_DEPS[@]}" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
wanted = set(sys.argv[1:])
picked = [d for d in deps if re.match(r"[A-Za-z0-9_.-]+", d).group().lower() in wanted]
missing = wanted - {re.match(r"[A-Za-z0-9_.-]+", d).group().lower() for d in picked}
if missing:
    sys.exit(f"pyproject.toml lists no {sorted(missing)}")
print("\n".join(picked))
EOF
)
key="python $py_version; platforms $platforms; requirements: $(echo "$requirements" | tr '\n' ' ')"

if [[ -f $WHEELS/.key && $(cat "$WHEELS/.key") == "$key" ]]; then
    wheels=("$WHEELS"/*.whl)
    say "wheelhouse up to date (${#wheels[@]} wheels)"
else
    newest=${platforms%,*}
    say "downloading wheels for cp${py_version/./} on ${platforms%%,*} .. ${newest##*,}"
    mkdir -p "$REPO/.cache"
    echo '*' >"$REPO/.cache/.gitignore"
    tmp=$(mktemp -d "$REPO/.cache/wheels.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "$requirements" >"$tmp/requirements.txt"
    platform_args=()
    for p in ${platforms//,/ }; do platform_args+=(--platform "$p"); done
    "$python" -m pip download -q --disable-pip-version-check --dest "$tmp" --only-binary=:all: \
        --python-version "$py_version" --implementation cp "${platform_args[@]}" -r "$tmp/requirements.txt" >&2
    echo "$key" >"$tmp/.key"
    rm -rf "$WHEELS"
    mv "$tmp" "$WHEELS"
    trap - EXIT
    wheels=("$WHEELS"/*.whl)
    say "wheelhouse: ${wheels[*]##*/}"
fi

# No buildx plugin: use the classic builder explicitly (it needs nothing from a registry).
if [[ -z ${DOCKER_BUILDKIT:-} ]] && ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
previous=$(image_id "$IMAGE")
previous_deps=$(image_id "$DEPS_IMAGE")
say "docker build $DEPS_IMAGE (the dependencies stage), then $IMAGE, from $base"
build=(docker build --build-arg "BASE_IMAGE=$base" -f images/node/Dockerfile)
"${build[@]}" --target deps -t "$DEPS_IMAGE" . >&2
"${build[@]}" -t "$IMAGE" . >&2  # the dependencies stage comes from the cache just made
current=$(image_id "$IMAGE")
remove_replaced() {  # OLD NEW: the replaced build goes, unless a container still uses it
    if [[ -n $1 && $1 != "$2" ]]; then docker image rm "$1" >/dev/null 2>&1 || true; fi
}
remove_replaced "$previous" "$current"
remove_replaced "$previous_deps" "$(image_id "$DEPS_IMAGE")"
# dependency stages that an interrupted build left untagged (the label is the Dockerfile's)
docker image prune -f --filter "label=$STAGE_LABEL" >/dev/null

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
tor_version=$(docker run --rm --network none --entrypoint tor "$IMAGE" --version | head -n 1)
say "$IMAGE ($current) built on $base in $((SECONDS - started)) s; ${tor_version%.}"
echo "$IMAGE: $(numfmt --to=iec --suffix=B "$size") ($size bytes)"
