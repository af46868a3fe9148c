#!/usr/bin/env bash
# Build onionlab/node:latest without a container registry.
#
#   1. build-base.sh picks the base image (python:3.11-slim if present or pullable, else
#      onionlab/base:bookworm, built from Debian packages when missing).
#   2. The wheelhouse .cache/wheels is filled on the HOST with `pip download` of the node's runtime
#      dependencies (NODE_DEPS, versions from pyproject.toml), for the base's Python version, CPU and glibc;
#      it is reused while the requirements and the target are the same.
#   3. `docker build` with the repository as context (.dockerignore lets only nodes/ and the wheelhouse in);
#      nothing in the build touches the network.
#
# Environment: IMAGE (default onionlab/node:latest), BASE_IMAGE, PULL_TIMEOUT, DEBIAN_MIRROR (see
# build-base.sh), PYTHON (the host Python with pip, default: python3, else .venv/bin/python).
set -euo pipefail

IMAGE=${IMAGE:-onionlab/node:latest}
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
previous=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
say "docker build $IMAGE from $base"
docker build --build-arg "BASE_IMAGE=$base" -f images/node/Dockerfile -t "$IMAGE" . >&2
current=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [[ -n $previous && $previous != "$current" ]]; then
    docker image rm "$previous" >/dev/null 2>&1 || true  # the replaced build, unless a container still uses it
fi

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "$IMAGE ($current) built on $base in $((SECONDS - started)) s"
echo "$IMAGE: $(numfmt --to=iec --suffix=B "$size") ($size bytes)"
