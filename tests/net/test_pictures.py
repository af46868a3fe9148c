"""The pictures of a real lab, rendered in headless Chromium (tests/render.py): `onionlab flow --svg`, the
same after an intro point NACKed (the retried intro point drawn), `onionlab graph --live --format svg` and the
HTML report of a short chaos run, all from the default topology on the local backend (processes on
127.0.0.x). Each must render with no console error and show the run's own nodes; the screenshots go to
$ONIONLAB_SCREENSHOTS when set (else the test's tmp dir). Chromium missing: FAIL under CI=true.

The retry: relays on the service's intro circuits are restarted (same keys), chosen to break two of the three
circuits (else one) while one stays whole: the intro points at their ends forget the service, so the client's
cached descriptor names intro points that answer INTRODUCE1 with a NACK, and one that still serves. The
client tries them in random order, so flows run until one hits a NACKing intro point first and then succeeds
at the next (each flow does with probability 1/3 or 2/3; twelve all missing: under 1 % and 0.001 %). When
all three intro circuits run through the same relays, no restart can do that, and the test starts one more
lab."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.etree import ElementTree

from orchestrator.backends.local import LocalBackend
from tests.render import RenderResult, render, require_chromium

REPO = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"
RETRY_FLOWS = 12

CHAOS = textwrap.dedent("""\
    name: pictures-kill-a-relay
    seed: 3
    duration: 24
    ready_timeout: 60
    workload: {bytes: 2000, interval: 1, timeout: 10}
    faults:
      - {fault: kill, target: random relay, at: 3, for: 4}
    checkers:
      availability: {after_heal: 0.5, grace: 6}
    """)


def _onionlab(env: dict, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def _shot(name: str, result: RenderResult, tmp_path: Path) -> None:
    where = Path(os.environ.get("ONIONLAB_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    (where / name).write_bytes(result.png)
    assert result.png.startswith(b"\x89PNG") and result.width > 800 and result.height > 300


def _flow(env: dict, svg: Path) -> dict:
    run = _onionlab(env, "flow", "--json", "--svg", str(svg), "--html", str(svg.with_suffix(".html")),
                    timeout=120)
    assert run.returncode in (0, 1) and svg.exists(), run.stdout + run.stderr
    flow = json.loads(run.stdout)
    assert flow["ok"] == (run.returncode == 0)
    return flow


def _to_restart(held: dict[str, list[str]]) -> list[str] | None:
    """Relays (one, else two) whose restart breaks as many of the service's intro circuits as it can while
    one stays whole; None when no relay set does (every intro circuit runs through the same relays)."""
    relays = sorted({relay for path in held.values() for relay in path})
    best: tuple[int, list[str]] | None = None
    for size in (1, 2):
        for combo in itertools.combinations(relays, size):
            broken = sum(1 for path in held.values() if set(combo) & set(path))
            if 0 < broken < len(held) and (best is None or broken > best[0]):
                best = (broken, list(combo))
    return None if best is None else best[1]


def _retried_flow(env: dict, backend: LocalBackend, flow: dict, svg: Path) -> dict | None:
    """Restart relays so that some intro points of the client's cached descriptor forget the service while
    one still serves it, then flow until one flow has a NACK and then succeeds. None when this lab's intro
    circuits cannot be broken apart."""
    held = {r["peer"]: r["path"] for r in flow["steps"] if r["event"] == "intro_established"}
    assert sorted(held) == sorted(backend.node_status("hs")["intro_points"]) and len(held) == 3, held
    restart = _to_restart(held)
    if restart is None:
        return None
    for relay in restart:
        restarted = _onionlab(env, "restart", relay, timeout=120)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    outcomes = []
    for _ in range(RETRY_FLOWS):
        flow = _flow(env, svg)
        nacks = [r for r in flow["steps"] if r["event"] == "introduce_nack"]
        outcomes.append((flow["ok"], len(nacks), flow["error"]))
        if flow["ok"] and nacks:
            return flow
    raise AssertionError(f"restarted {restart} ({held}): no flow with a NACK and then success: {outcomes}")


def _check_flow_picture(flow: dict, svg: Path) -> tuple[ElementTree.Element, RenderResult]:
    """The rendered picture has six panels, and in each the circuits of that step's events, as paths from
    the client or service through the relays the events name."""
    result = render(svg)
    assert not result.errors, result.errors
    root = ElementTree.fromstring(result.dom)  # what Chromium made of it, not our file
    panels = {g.get("data-step"): g for g in root.iter(f"{SVG}g") if g.get("class") == "panel"}
    assert sorted(panels) == [str(n) for n in range(1, 7)]
    for record in flow["steps"]:
        panel = panels[str(record["step"])]
        drawn = {p.get("data-path") for p in panel.iter(f"{SVG}polyline")}
        names = {g.get("data-node") for g in panel.iter(f"{SVG}g") if g.get("data-node")}
        assert {flow["client"], "hs"} <= names
        if record["path"] and not record["cached"]:  # a cached descriptor was fetched before this flow
            assert " ".join([record["node"], *record["path"]]) in drawn, (record, drawn)
            assert set(record["path"]) <= names
    return root, result


def test_pictures_of_a_local_lab(tmp_path: Path) -> None:
    require_chromium()
    run_dir = tmp_path / "run"
    env = {**os.environ, "ONIONLAB_RUN_DIR": str(run_dir)}
    up = _onionlab(env, "up", "--backend", "local", "--timeout", "90", "topologies/default.yaml", timeout=150)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        backend = LocalBackend(run_dir)

        # the flow of this run: every step, each circuit through the relays its event names
        flow = _flow(env, tmp_path / "flow.svg")
        assert flow["ok"], flow
        _, shot = _check_flow_picture(flow, tmp_path / "flow.svg")
        _shot("flow.png", shot, tmp_path)
        page = render(tmp_path / "flow.html")  # the same picture inline, and the timeline
        assert not page.errors, page.errors
        assert page.dom.count('class="panel"') == 6 and "flow OK: all six steps happened" in page.dom
        _shot("flow-page.png", page, tmp_path)

        # a retried intro point: NACK from one whose service circuit is gone, then the next one
        retried = _retried_flow(env, backend, flow, tmp_path / "retry.svg")
        if retried is None:  # all three intro circuits run through the same relays: one more lab
            assert _onionlab(env, "down", timeout=90).returncode == 0
            up = _onionlab(env, "up", "--backend", "local", "--timeout", "90", "topologies/default.yaml",
                           timeout=150)
            assert up.returncode == 0, up.stdout + up.stderr
            flow = _flow(env, tmp_path / "flow2.svg")
            assert flow["ok"], flow
            retried = _retried_flow(env, backend, flow, tmp_path / "retry.svg")
        assert retried is not None, "two labs whose intro circuits all ran through the same relays"
        flow = retried
        nacks = [r for r in flow["steps"] if r["event"] == "introduce_nack"]
        sent = [r for r in flow["steps"] if r["event"] == "introduce_sent"]
        assert len(sent) == len(nacks) + 1  # each NACKed intro point, then the one that took it
        root, shot = _check_flow_picture(flow, tmp_path / "retry.svg")
        failed = {p.get("data-path") for p in root.iter(f"{SVG}polyline") if p.get("class") == "failed"}
        assert failed == {" ".join([flow["client"], *r["path"]]) for r in nacks}
        assert "NACK" in "".join(root.itertext())
        _shot("flow-retried-intro.png", shot, tmp_path)

        # graph --live: the roles of right now
        live = _onionlab(env, "graph", "--live", "--format", "svg", timeout=60)
        assert live.returncode == 0, live.stderr
        (tmp_path / "live.svg").write_text(live.stdout)
        shot = render(tmp_path / "live.svg")
        assert not shot.errors, shot.errors
        root = ElementTree.fromstring(shot.dom)
        label = {g.get("data-node"): " | ".join(t.text for t in g.iter(f"{SVG}text"))
                 for g in root.iter(f"{SVG}g") if g.get("data-node")}
        assert len(label) == 11
        for relay in backend.node_status("hs")["intro_points"]:
            assert "intro point of hs" in label[relay], label[relay]
        for relay in backend.node_status("client")["guards"]["primary"]:
            assert re.search(r"guard of [^|]*\bclient\b", label[relay]), label[relay]
        chains = {g.get("data-path") for g in root.iter(f"{SVG}g") if g.get("class") == "rendezvous"}
        assert chains  # the flows' circuits, the owner first
        assert all(c.split()[0] in ("client", "hs") and len(c.split()) == 4 for c in chains), chains
        _shot("graph-live.png", shot, tmp_path)

        # the chaos report of a short real run
        (tmp_path / "chaos.yaml").write_text(CHAOS)
        chaos = _onionlab(env, "chaos", str(tmp_path / "chaos.yaml"), "--history", str(tmp_path / "h.jsonl"),
                          "--html", str(tmp_path / "chaos.html"), timeout=240)
        assert (tmp_path / "chaos.html").exists(), chaos.stdout + chaos.stderr
        shot = render(tmp_path / "chaos.html")
        assert not shot.errors, shot.errors
        killed = next(json.loads(line)["node"] for line in (tmp_path / "h.jsonl").read_text().splitlines()
                      if json.loads(line).get("type") == "fault")
        assert "pictures-kill-a-relay" in shot.dom and "<h2>Verdicts</h2>" in shot.dom
        assert f">{killed}</text>" in shot.dom and "<svg" in shot.dom
        _shot("chaos-report.png", shot, tmp_path)
    finally:
        down = _onionlab(env, "down", "--keep", timeout=90)  # the run dir (in tmp) keeps the events
    assert down.returncode == 0, down.stderr
