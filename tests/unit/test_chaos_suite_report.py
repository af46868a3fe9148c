"""The suite's report (report.render_suite_html, suite.write_report) on synthetic runs: it parses as HTML, has
the summary table and a section per scenario (id = its name) with a row per seed giving every verdict,
availability and recovery median and max, a timeline per run, and a refused run says why. No scripts, no
external resources. The suite's scenario list names files that exist."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from orchestrator import chaos, report
from orchestrator.chaos.suite import SCENARIOS, SUITE, write_report
from tests.render import render, require_chromium

from .test_chaos import fault, fetch, history


class Page(HTMLParser):
    """Collects what the tests look at: ids, tags, the text of each section, external references."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.section: str | None = None
        self.text: dict[str | None, list[str]] = {}
        self.external: list[str] = []
        self.rows: dict[str | None, list[list[str]]] = {}  # section -> table rows -> cell texts
        self.in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "tr":
            self.rows.setdefault(self.section, []).append([])
        if tag in ("td", "th"):
            self.rows[self.section][-1].append("")
            self.in_cell = True
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "section":
            self.section = attrs["id"]
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith("#"):
                self.external.append(attrs[key])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.in_cell = False
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        self.text.setdefault(self.section, []).append(data)
        if self.in_cell:
            self.rows[self.section][-1][-1] += data


def run(name: str, seed: int, ok: bool = True) -> dict:
    fetches = [fetch(i, float(i), ok=not 10 <= i < 13) for i in range(30)]
    records = history(*fetches, fault(0, "relay1", 10.0, 12.0))
    records.insert(0, {"type": "run", "t": 0.0, "scenario": name, "seed": seed, "duration": 30,
                       "lab": [], "workload": {"bytes": 100}})
    records += [{"type": "verdict", "t": 30.0, **v.to_dict()}
                for v in chaos.judge(records, chaos.Checkers(recovers_within=5 if ok else 0.1))]
    return {"scenario": name, "description": f"{name} in one line", "seed": seed, "ok": ok, "refused": None,
            "seconds": 31.0, "history": records, "history_path": f"/x/{name}-{seed}.jsonl",
            "stats": chaos.fetch_stats(records)}


def test_the_report_has_a_section_per_scenario_with_its_figures(tmp_path: Path) -> None:
    runs = [run("guard-failure", 1), run("guard-failure", 2, ok=False), run("relay-pause", 1),
            {"scenario": "partition-heal", "description": "", "seed": 1, "ok": False, "seconds": 0.2,
             "refused": "fault partition is not supported by the local backend", "history": []}]
    page = Page()
    page.feed(report.render_suite_html(runs))
    page.close()
    assert page.ids == ["summary", "guard-failure", "relay-pause", "partition-heal"]
    assert page.tags.count("section") == 3
    assert page.tags.count("svg") == 3  # a timeline per run that ran
    assert not page.external and "script" not in page.tags
    assert "guard-failure in one line" in "".join(page.text["guard-failure"])
    header, *rows = page.rows["guard-failure"]
    assert header == ["seed", "verdict", "checkers", "availability", "recovery median", "recovery max", "run"]
    checkers = "no_wrong_bytes faults lab_state anonymity consensus_health recovers"
    # 27 of 30 fetches ok; fetch 13 (13.0-13.5 s) is the first good one after the heal at 12 s
    assert rows == [["1", "PASS", checkers, "90.0%", "1.5 s", "1.5 s", "31\xa0s"],
                    ["2", "FAIL", checkers, "90.0%", "1.5 s", "1.5 s", "31\xa0s"]]
    assert "refused: fault partition is not supported" in "".join(page.text["partition-heal"])
    summary = "".join(page.text[None])
    assert "2 of 4 runs passed" in summary and "1 of 2" in summary
    json_path, html_path = write_report(runs, tmp_path / "out")
    saved = json.loads(json_path.read_text())
    assert [r["scenario"] for r in saved] == [r["scenario"] for r in runs]
    assert all("history" not in r for r in saved)  # the records stay in the history files
    assert html_path.read_text().startswith("<!doctype html>")


def test_every_suite_scenario_has_its_file() -> None:
    assert len(SUITE) == len(set(SUITE)) == 13
    assert all((SCENARIOS / f"{name}.yaml").is_file() for name in SUITE)


def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The suite's page as a browser shows it: no console error, a section per scenario, a timeline a run."""
    require_chromium()
    runs = [run("guard-failure", 1), run("guard-failure", 2, ok=False), run("relay-pause", 1)]
    _, html_path = write_report(runs, tmp_path / "out")
    shown = render(html_path)
    assert shown.errors == []
    assert shown.png.startswith(b"\x89PNG") and shown.height > 400
    assert shown.dom.count("<section") == 2 and shown.dom.count("<svg") == 3
    assert 'id="guard-failure"' in shown.dom and 'id="relay-pause"' in shown.dom
