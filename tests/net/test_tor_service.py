"""The other way round from test_tor_peer: a stock tor (Debian's tor 0.4.9) is the onion SERVICE, configured
only with what `onionlab export torrc --role onion_service` prints (the user's own torrc), in front of a small
web app (Python's http.server). It publishes to the lab's HSDirs, keeps its introduction points on our relays,
and onionlab's client reaches it: / and 1 MB fetched through OUR client's SocksPort, every byte checked.
Our relays are tor's guards, middles, intro points and HSDirs, and the rendezvous point our client picks
joins tor's RENDEZVOUS1. tor's log must hold no warning besides its notes on its own configuration.

There is no skip: without `tor` or `curl` on PATH the test fails, saying so (`.ci/run` installs them).
"""

import os
import shutil
import subprocess
import sys
import time

from orchestrator.flow import parse_events
from orchestrator.tor_process import TorProcess, tor_binary

from .tor_lab import free_port, local_lab, report_run

BOOTSTRAP_TIMEOUT = 180
PUBLISH_DEADLINE = 120  # tor uploads once its three intro points answered; our client retries until then
BULK = 1_000_000


def _curl(socks: str, url: str, tag: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """GET `url` through `socks` with fresh SOCKS credentials (a new rendezvous, no reused circuit)."""
    user = f"{tag}-{time.monotonic_ns()}"
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", str(timeout),
                           "--socks5-hostname", f"{user}:x@{socks}", url], capture_output=True,
                          timeout=timeout + 30)


def _fetch(socks: str, url: str, deadline: float) -> tuple[bytes, float]:
    """Retry until the descriptor is published (our client answers 0xF0 until then); (body, seconds)."""
    while True:
        started = time.monotonic()
        done = _curl(socks, url, "app")
        if done.returncode == 0:
            return done.stdout, time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not reached through {socks}: {done.stderr.decode()}")
        time.sleep(1)


def test_onionlab_client_reaches_a_stock_tor_onion_service(tmp_path):
    tor_binary()  # fails loudly when tor is missing
    assert shutil.which("curl") is not None, "this test needs curl (.ci/run installs it)"
    site = tmp_path / "site"
    site.mkdir()
    page = b"<!doctype html><title>a web app behind tor</title><p>hello from a stock tor onion service\n"
    (site / "index.html").write_bytes(page)
    blob = os.urandom(BULK)
    (site / "1MB").write_bytes(blob)
    app_port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "http.server", str(app_port), "--bind", "127.0.0.1",
                            "--directory", str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tor = None
    try:
        with local_lab(tmp_path / "run") as lab:
            socks = lab.status()["clients"][0]["socks"]
            torrc = lab.export_torrc(tmp_path / "torrc", "--role", "onion_service",
                                     "--data-directory", str(tmp_path / "tor" / "data"),
                                     "--hidden-service-dir", str(tmp_path / "tor" / "hs"),
                                     "--hidden-service-port", f"80 127.0.0.1:{app_port}")
            assert "HiddenServicePort 80 127.0.0.1:" in torrc and "SocksPort 0" in torrc
            tor = TorProcess(tmp_path / "tor", torrc)
            tor.start()
            bootstrap_s = tor.wait_bootstrapped(BOOTSTRAP_TIMEOUT)
            onion = (tmp_path / "tor" / "hs" / "hostname").read_text().strip()

            got, first_s = _fetch(socks, f"http://{onion}/", time.monotonic() + PUBLISH_DEADLINE)
            assert got == page
            got, bulk_s = _fetch(socks, f"http://{onion}/1MB", time.monotonic() + 60)
            assert len(got) == BULK and got == blob

            # our side of the rendezvous, from our nodes' events: tor's descriptor was stored by our HSDirs,
            # our client fetched it, and our relays were tor's intro points and joined its RENDEZVOUS1
            events = {}
            for node in lab.status()["nodes"]:
                for event in parse_events(lab.run("logs", node["name"], "--json").stdout):
                    events.setdefault(event["event"], []).append(event)
            for name in ("descriptor_stored", "intro_point_registered", "introduce_forwarded",
                         "rendezvous_joined"):
                assert events.get(name), f"no {name} event from our relays"
            assert any(e.get("onion") == onion for e in events.get("descriptor_fetched", [])), \
                "our client did not report fetching tor's descriptor"

            report_run(tor, bootstrap_s=bootstrap_s, first_s=first_s, bulk_s=bulk_s, bulk=BULK)
    except BaseException:
        if tor is not None:
            print("==> tor's log <==\n" + tor.log()[-8000:])
        raise
    finally:
        if tor is not None:
            tor.stop()
        app.terminate()
        app.wait(10)
