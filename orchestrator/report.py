"""A chaos run's history (orchestrator/chaos/, JSONL) as a text summary and a self-contained HTML timeline.

Both read only the history records, so they work as well on a history file saved by an earlier run
(`chaos.read_history`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from .chaos import fetch_stats


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def fault_rows(history: Sequence[dict]) -> list[dict]:
    """One row per fault on one node: op, fault, node, start, end (None: never undone), ok, detail."""
    rows: dict[tuple, dict] = {}
    for r in history:
        key = (r.get("op"), r.get("node"))
        if r.get("type") == "ready" and key in rows:  # a node started again after kill or stop
            rows[key]["ok"] = rows[key]["ok"] and r.get("ok")
            rows[key]["detail"] += f", ready {r['after']:g} s later" if r.get("ok") else f", {r.get('error')}"
        if r.get("type") != "fault":
            continue
        if r["event"] == "start":
            rows[key] = {"op": r.get("op"), "fault": r.get("fault"), "node": r.get("node") or "-",
                         "target": r.get("target"), "start": r["t"], "end": None, "ok": r.get("ok"),
                         "detail": r.get("error") or ""}
        elif key in rows:
            rows[key]["end"] = r["t"]
            rows[key]["ok"] = rows[key]["ok"] and r.get("ok")
            rows[key]["detail"] = r.get("detail") if r.get("ok") else f"undo FAILED: {r.get('error')}"
            rows[key]["why"] = r.get("why")
    return sorted(rows.values(), key=lambda row: (row["start"], row["op"] or 0))


def render_summary(history: Sequence[dict]) -> str:
    run = next((r for r in history if r.get("type") == "run"), {})
    lines = [f"scenario {run.get('scenario')} (seed {run.get('seed')}) against lab nodes "
             f"{', '.join(n['name'] for n in run.get('lab', []))}", ""]
    faults = fault_rows(history)
    if faults:
        rows = [("OP", "FAULT", "TARGET", "NODE", "START S", "END S", "RESULT")]
        for f in faults:
            end = "-" if f["end"] is None else f"{f['end']:.1f}"
            result = ("ok" if f["ok"] else "FAILED") + (f" ({f['why']})" if f.get("why") == "cleanup" else "")
            rows.append((str(f["op"]), f["fault"], f["target"] or "", f["node"], f"{f['start']:.1f}", end,
                         f"{result}: {f['detail']}" if f["detail"] else result))
        lines += _table(rows)
    else:
        lines.append("no faults")
    stats = fetch_stats(history)
    latency = stats["latency_ms"]
    lines += ["", f"fetches: {stats['fetches']}, ok {stats['ok']}"
              + (f", latency of the ok ones p50 {latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms, "
                 f"max {latency['max']:.0f} ms" if latency["p50"] is not None else "")]
    for reason, count in sorted(stats["failed"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  failed: {count} x {reason}")
    lines.append(recovery_line(stats))
    cleanup = next((r for r in history if r.get("type") == "cleanup"), None)
    if cleanup is not None:
        lines.append("cleanup: " + ("nothing left in place" if cleanup["ok"]
                                    else "LEFT IN PLACE: " + "; ".join(cleanup["left"])))
    verdicts = [r for r in history if r.get("type") == "verdict"]
    if verdicts:
        lines += ["", *_table([("CHECKER", "VERDICT", "")] + [
            (v["name"], "PASS" if v["ok"] else "FAIL", v["summary"]) for v in verdicts])]
        for v in verdicts:
            if not v["ok"]:
                lines += [f"  {v['name']}: {d}" for d in v["details"]]
    end = next((r for r in history if r.get("type") == "end"), None)
    if end is not None:
        lines += ["", "INTERRUPTED: the run did not finish (every fault was undone)" if end["interrupted"]
                  else ("chaos OK: every checker passed" if end["ok"] else "chaos FAILED")]
    return "\n".join(lines)


def recovery_line(stats: dict) -> str:
    """Availability and the recovery figures of fetch_stats, in one line."""
    rec = stats["recovery_s"]
    share = "-" if stats["availability"] is None else f"{stats['availability']:.1%}"
    line = f"availability {share}; "
    if not rec["heals"]:
        return line + "no fault healed: no recovery to time"
    line += f"recovery after {rec['heals']} heal(s)"
    if rec["recovered"]:
        line += f": median {rec['median']:.1f} s, max {rec['max']:.1f} s"
    if rec["recovered"] < rec["heals"]:
        line += f"; {rec['heals'] - rec['recovered']} never recovered"
    return line


_COLOURS = {"kill": "#c0392b", "stop": "#e67e22", "pause": "#8e44ad", "partition": "#2c3e50",
            "bandwidth": "#16a085", "delay": "#2980b9", "loss": "#7f8c8d"}


def timeline_svg(history: Sequence[dict]) -> str:
    """The run as an SVG (no scripts): faults as bars (a lane per node), fetches as ticks (green ok, red
    failed, black wrong bytes; height the latency); hover for details."""
    run = next((r for r in history if r.get("type") == "run"), {})
    end_t = max([r.get("end", r["t"]) for r in history if r.get("type") in ("fetch", "fault", "cleanup")]
                + [float(run.get("duration") or 1)])
    faults = fault_rows(history)
    lanes = sorted({f["node"] for f in faults})
    width, left, lane_h = 1000, 110, 22
    fetch_top = 20 + lane_h * len(lanes) + 20
    fetch_h = 80
    height = fetch_top + fetch_h + 40

    def x(t: float) -> float:
        return left + (width - left - 10) * max(0.0, t) / end_t

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="11">']
    for i, lane in enumerate(lanes):
        y = 20 + i * lane_h
        parts.append(f'<text x="4" y="{y + 14}">{html.escape(lane)}</text>')
    for f in faults:
        y = 20 + lanes.index(f["node"]) * lane_h
        end = f["end"] if f["end"] is not None else end_t
        title = html.escape(f"op {f['op']} {f['fault']} {f['node']}: {f['start']:.1f}-{end:.1f} s "
                            f"{'ok' if f['ok'] else 'FAILED'} {f['detail']}")
        bar = max(2.0, x(end) - x(f["start"]))
        parts.append(f'<rect x="{x(f["start"]):.1f}" y="{y + 2}" width="{bar:.1f}" '
                     f'height="{lane_h - 6}" fill="{_COLOURS.get(f["fault"], "#555")}" '
                     f'opacity="{0.9 if f["ok"] else 0.35}"><title>{title}</title></rect>')
        parts.append(f'<text x="{x(f["start"]) + 3:.1f}" y="{y + 14}" fill="white">{html.escape(f["fault"])}'
                     '</text>')
    fetches = [r for r in history if r.get("type") == "fetch"]
    worst = max([f["latency_ms"] for f in fetches] + [1.0])
    parts.append(f'<text x="4" y="{fetch_top + fetch_h / 2}">fetches</text>')
    parts.append(f'<line x1="{left}" y1="{fetch_top + fetch_h}" x2="{width - 10}" y2="{fetch_top + fetch_h}" '
                 'stroke="#999"/>')
    for f in fetches:
        colour = "#27ae60" if f["ok"] else ("#000" if f["result"] == "wrong_bytes" else "#e74c3c")
        h = max(3.0, fetch_h * f["latency_ms"] / worst)
        title = html.escape(f"fetch {f['n']} at {f['start']:.1f} s: {f['result']} {f['latency_ms']:.0f} ms "
                            f"{f.get('error') or ''}")
        parts.append(f'<rect x="{x(f["start"]):.1f}" y="{fetch_top + fetch_h - h:.1f}" '
                     f'width="{max(1.5, x(f["end"]) - x(f["start"])):.1f}" height="{h:.1f}" fill="{colour}">'
                     f'<title>{title}</title></rect>')
    for tick in range(0, int(end_t) + 1, max(1, int(end_t / 10))):
        parts.append(f'<text x="{x(tick):.1f}" y="{height - 8}" text-anchor="middle">{tick} s</text>')
    parts.append("</svg>")
    return "".join(parts)


def verdict_items(history: Sequence[dict]) -> str:
    """The verdicts as <li> items (class pass or fail), a failed one with its details."""
    return "".join(
        f'<li class="{"pass" if v["ok"] else "fail"}"><b>{html.escape(v["name"])}</b> '
        f'{"PASS" if v["ok"] else "FAIL"}: {html.escape(v["summary"])}'
        + "".join(f"<br>&nbsp;&nbsp;{html.escape(d)}" for d in v["details"] if not v["ok"]) + "</li>"
        for v in history if v.get("type") == "verdict")


STYLE = "body{font-family:sans-serif;margin:1.5em} .pass{color:#1e8449} .fail{color:#c0392b}"


def render_html(history: Sequence[dict]) -> str:
    """One page, no scripts, no external resources: the timeline_svg, then the verdicts and the summary."""
    run = next((r for r in history if r.get("type") == "run"), {})
    title = html.escape(f"onionlab chaos: {run.get('scenario')} (seed {run.get('seed')})")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}"
            f"</style></head><body><h1>{title}</h1>"
            f"<p>{html.escape(str(run.get('source', '')))}: "
            f"/bytes/{(run.get('workload') or {}).get('bytes')} "
            f"from {html.escape(str(run.get('service')))} via {html.escape(str(run.get('client')))}. "
            "Hover a bar or a tick for details.</p>"
            f"{timeline_svg(history)}<h2>Verdicts</h2><ul>{verdict_items(history)}</ul>"
            f"<h2>Summary</h2><pre>{html.escape(render_summary(history))}</pre></body></html>\n")


def render_suite_html(runs: Sequence[dict], *, title: str = "onionlab chaos suite") -> str:
    """One self-contained page for a suite of runs (orchestrator/chaos/suite.py): a summary table, then a
    section per scenario (id = its name) with a row per seed (every verdict, availability, recovery median
    and max) and each run's timeline. A run: {scenario, description, seed, ok, seconds, refused, history}."""
    scenarios: dict[str, list[dict]] = {}
    for run in runs:
        scenarios.setdefault(run["scenario"], []).append(run)

    def verdict_cells(run: dict) -> str:
        verdicts = [r for r in run["history"] if r.get("type") == "verdict"]
        return " ".join(f'<span class="{"pass" if v["ok"] else "fail"}" '
                        f'title="{html.escape(v["summary"])}">{html.escape(v["name"])}</span>'
                        for v in verdicts)

    def figures(run: dict) -> tuple[str, str, str]:
        stats = fetch_stats(run["history"])
        rec = stats["recovery_s"]
        share = "-" if stats["availability"] is None else f"{stats['availability']:.1%}"
        median = "-" if rec["median"] is None else f"{rec['median']:.1f} s"
        worst = "-" if rec["max"] is None else f"{rec['max']:.1f} s"
        return share, median, worst

    def verdict_word(run: dict) -> str:
        if run.get("refused"):
            return '<span class="fail">REFUSED</span>'
        return '<span class="pass">PASS</span>' if run["ok"] else '<span class="fail">FAIL</span>'

    rows = []
    for name, group in scenarios.items():
        passed = sum(1 for r in group if r["ok"])
        rows.append(f'<tr><td><a href="#{html.escape(name)}">{html.escape(name)}</a></td>'
                    f'<td class="{"pass" if passed == len(group) else "fail"}">{passed} of {len(group)}</td>'
                    f'<td>{sum(r["seconds"] for r in group):.0f} s</td></tr>')
    sections = []
    for name, group in scenarios.items():
        table = ["<table><tr><th>seed</th><th>verdict</th><th>checkers</th><th>availability</th>"
                 "<th>recovery median</th><th>recovery max</th><th>run</th></tr>"]
        timelines = []
        for run in group:
            share, median, worst = figures(run) if not run.get("refused") else ("-", "-", "-")
            table.append(f"<tr><td>{run['seed']}</td><td>{verdict_word(run)}</td>"
                         f"<td>{verdict_cells(run)}</td><td>{share}</td><td>{median}</td><td>{worst}</td>"
                         f"<td>{run['seconds']:.0f}&nbsp;s</td></tr>")
            if run.get("refused"):
                timelines.append(f'<h3>seed {run["seed"]}</h3><p class="fail">refused: '
                                 f'{html.escape(run["refused"])}</p>')
            else:
                timelines.append(f'<h3>seed {run["seed"]}</h3>{timeline_svg(run["history"])}'
                                 f'<ul>{verdict_items(run["history"])}</ul>')
        table.append("</table>")
        description = html.escape(group[0].get("description") or "")
        sections.append(f'<section id="{html.escape(name)}"><h2>{html.escape(name)}</h2><p>{description}</p>'
                        f'{"".join(table)}{"".join(timelines)}</section>')
    ok = sum(1 for r in runs if r["ok"])
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title><style>"
            f"{STYLE} table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccc;"
            "padding:2px 6px;text-align:left}} section{margin-top:2em}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{ok} of {len(runs)} runs passed. Hover a checker for its "
            f"summary, a bar or a tick of a timeline for details.</p><table id=\"summary\"><tr><th>scenario"
            f"</th><th>passed</th><th>time</th></tr>{''.join(rows)}</table>{''.join(sections)}</body></html>\n")
