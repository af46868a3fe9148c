"""A node process imports only what its image holds: no orchestrator, yaml, docker, requests or rich (each
would cost every one of a lab's 300 containers memory, and the image does not have them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nodes.roles import COMMANDS

ORCHESTRATOR_ONLY = ("orchestrator", "yaml", "docker", "requests", "rich", "urllib3")


@pytest.mark.parametrize("word", COMMANDS)
def test_a_role_imports_nothing_of_the_orchestrators(word):
    code = ("import sys, nodes.__main__\n"
            f"from nodes.roles import serve_for\nserve_for({word!r})\n"
            f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({ORCHESTRATOR_ONLY!r}))))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == ""
