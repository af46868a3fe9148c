"""The real peer: a stock tor client (Debian's tor 0.4.9) joins an onionlab lab on the local backend,
configured only with what `onionlab export torrc` prints, bootstraps to 100% from our authorities, and
fetches / and 1 MB from our onion service through ITS SocksPort, every byte checked. tor's log must hold no
warning about our documents, certificates or cells.

There is no skip: without `tor` on PATH the test fails, saying so (`.ci/run` installs it).
"""

import shutil
import subprocess
import time

from orchestrator.flow import fetch_pattern, fresh_credentials, socks_connect
from orchestrator.tor_process import TorProcess, tor_binary

from .tor_lab import free_port, local_lab, report_run

BOOTSTRAP_TIMEOUT = 180
FETCH_DEADLINE = 120
BULK = 1_000_000


def _fetch(socks: str, onion: str, n: int, deadline: float) -> float:
    """Fetch /bytes/n through `socks`, retrying until `deadline` (tor may still be fetching the descriptor's
    HSDirs' consensus entries); seconds of the successful try."""
    while True:
        started = time.monotonic()
        try:
            with socks_connect(socks, onion, 80, credentials=fresh_credentials("tor"), timeout=60) as sock:
                assert fetch_pattern(sock, onion, n) == n
                return time.monotonic() - started
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_stock_tor_client_reaches_an_onionlab_onion_service(tmp_path):
    tor_binary()  # fails loudly when tor is missing
    curl = shutil.which("curl")
    assert curl is not None, "this test needs curl (.ci/run installs it)"
    tor = None
    try:
        with local_lab(tmp_path / "run") as lab:
            onion = lab.status()["onion_services"][0]["onion"]
            socks = f"127.0.0.1:{free_port()}"
            torrc = lab.export_torrc(tmp_path / "torrc", "--socks-port", socks, "--data-directory",
                                     str(tmp_path / "tor" / "data"))
            tor = TorProcess(tmp_path / "tor", torrc)
            tor.start()
            bootstrap_s = tor.wait_bootstrapped(BOOTSTRAP_TIMEOUT)

            deadline = time.monotonic() + FETCH_DEADLINE
            first_s = _fetch(socks, onion, 1000, deadline)
            page = subprocess.run([curl, "--silent", "--show-error", "--max-time", "60", "--socks5-hostname",
                                   socks, f"http://{onion}/"], capture_output=True, timeout=90)
            assert page.returncode == 0, page.stderr.decode()
            assert page.stdout.startswith(b"<!doctype html>") and onion.encode() in page.stdout
            bulk_s = _fetch(socks, onion, BULK, time.monotonic() + 60)

            report_run(tor, bootstrap_s=bootstrap_s, first_s=first_s, bulk_s=bulk_s, bulk=BULK)
    except BaseException:
        if tor is not None:
            print("==> tor's log <==\n" + tor.log()[-8000:])
        raise
    finally:
        if tor is not None:
            tor.stop()
