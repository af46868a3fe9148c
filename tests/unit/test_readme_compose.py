"""The README's docker compose lines with Compose v2 (`docker compose`) and with v1 (`docker-compose`), each
alone on the PATH, as stand-ins that record how they are called (no Docker here; tests/docker/test_compose.py
runs the same lines against the real engine with whichever Compose the machine has)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ONION = "a" * 56 + ".onion"
LOG = f'hs_1  | {{"ts": 1, "node": "hs", "event": "onion_service_started", "onion": "{ONION}"}}'


def readme_compose_lines() -> list[str]:
    section = (REPO / "README.md").read_text().split("\n## docker compose\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()


def stand_ins(bin_dir: Path, calls: Path, *, v2: bool) -> None:
    """docker (with the compose plugin only when `v2`), docker-compose (v1, only without it) and curl."""
    compose = f'''
        echo "$COMPOSE $*" >>{calls}
        case "$1" in
          version) echo "Compose $COMPOSE" ;;
          logs) echo '{LOG}' ;;
        esac'''
    scripts = {
        "docker": f'''#!/bin/sh
        if [ "$1" = compose ] && [ {int(v2)} = 1 ]; then shift; COMPOSE="docker compose"; {compose}
        exit 0; fi
        echo "docker: unknown command: docker $1" >&2; exit 1''',
        "curl": f'''#!/bin/sh
        echo "curl $*" >>{calls}; echo '<!doctype html>' ''',
    }
    if not v2:
        scripts["docker-compose"] = f'''#!/bin/sh
        COMPOSE=docker-compose; {compose}'''
    bin_dir.mkdir()
    for name, text in scripts.items():
        (bin_dir / name).write_text(text.replace("\n        ", "\n") + "\n")
        (bin_dir / name).chmod(0o755)
    for tool in ("sh", "grep", "head", "sleep"):  # the rest of what the lines use: the machine's own
        (bin_dir / tool).symlink_to(shutil.which(tool))


@pytest.mark.parametrize("v2", [True, False], ids=["compose v2", "compose v1"])
def test_the_readme_compose_lines_work_with_v2_and_with_v1(v2, tmp_path):
    calls = tmp_path / "calls"
    stand_ins(tmp_path / "bin", calls, v2=v2)
    env = {"PATH": str(tmp_path / "bin"), "HOME": str(tmp_path)}  # only the stand-ins: no Docker of ours
    result = subprocess.run([shutil.which("bash"), "-e", "-c", "\n".join(readme_compose_lines())], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    compose = "docker compose" if v2 else "docker-compose"
    made = calls.read_text().splitlines()
    assert [line for line in made if not line.startswith("curl ")] == [
        *(["docker compose version"] if v2 else []),  # v1 is what is left when `docker compose` says no
        f"{compose} up -d", f"{compose} logs hs", f"{compose} logs hs", f"{compose} down -v"]
    (curl,) = [line for line in made if line.startswith("curl ")]
    assert curl.endswith(f"--socks5-hostname 127.0.0.1:9050 http://{ONION}/")
    assert result.stdout == "<!doctype html>\n"
