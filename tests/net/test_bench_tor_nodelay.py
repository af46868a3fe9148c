"""bench.vs_tor --tor-nodelay: the preloaded shim it builds gives a child process's TCP sockets TCP_NODELAY
(made or accepted), and leaves them alone without it. Needs a C compiler, as the option does."""

import os
import subprocess
import sys

import pytest

from bench import vs_tor

# A child that makes a listener, connects to it, accepts, and prints TCP_NODELAY of all three sockets.
CHILD = """
import socket
opt = lambda s: s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
made = socket.create_connection(listener.getsockname())
accepted, _ = listener.accept()
print(opt(listener), opt(made), opt(accepted))
"""


def _child_nodelay(env: dict[str, str]) -> list[int]:
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, capture_output=True, text=True)
    return [1 if int(v) else 0 for v in out.stdout.split()]


def test_the_shim_sets_tcp_nodelay_on_made_and_accepted_sockets(tmp_path):
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    assert _child_nodelay(plain) == [0, 0, 0]
    try:
        env = vs_tor.nodelay_env(tmp_path)
    except vs_tor.BenchError:  # no C compiler: a failure under CI, which installs one
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("no C compiler")
    assert (tmp_path / "tcp_nodelay.so").exists()
    assert _child_nodelay(env) == [1, 1, 1]
