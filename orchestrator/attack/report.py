"""The guard-discovery report: JSON (result_data), a PNG of the two curves side by side (bench/plot.py, our
own PNG writer) and an HTML page with the figure, the trials and the paper's setting next to ours."""

from __future__ import annotations

import html
import json
from pathlib import Path

from bench.plot import Panel, Series, render

from .curves import empirical_located, expected_circuits, theoretical_located

# Facts about the paper, each with where it is stated (no paraphrase of its results beyond these).
PAPER = {
    "title": "Locating Hidden Servers",
    "authors": "Lasse Øverlier and Paul Syverson",
    "venue": "IEEE Symposium on Security and Privacy, 2006",
    "network": "the live Tor network, \"about 450 server nodes around the world at the time of writing\" "
               "(the paper's introduction)",
    "adversary": "\"Using a single hostile Tor node we have located deployed hidden servers in a matter of "
                 "minutes.\" (the paper's abstract)",
    "countermeasure": "\"We recommend changes to route selection design and implementation for Tor. [...] "
                      "They have been implemented.\" (the abstract): entry guards, the seed's step five",
}


def _ticks(n_max: int) -> list[int]:
    """Circuit counts to plot at: few enough for readable x labels."""
    step = max(1, n_max // 10)
    return sorted({1, *range(step, n_max + 1, step), n_max})


def curves(data: dict) -> dict:
    """Per mode: the trials' circuit counts when located, and P(located by n) observed and in theory."""
    f = data["adversary_share"]
    n_max = data["circuits_budget"]
    out = {}
    for mode in ("no guards", "guards"):
        trials = [t for t in data["trials"] if t["mode"] == mode]
        located = [t["located_at"] for t in trials]
        observed = empirical_located(located, n_max)
        out[mode] = {"trials": len(trials), "located_at": located,
                     "observed": [round(p, 4) for p in observed],
                     "theory": [round(theoretical_located(f, n), 4) for n in range(1, n_max + 1)]}
    guards = [t for t in data["trials"] if t["mode"] == "guards"]
    out["guards"]["adversarial_guards"] = sum(1 for t in guards if t["guard_adversarial"])
    return out


def render_png(data: dict) -> bytes:
    c = curves(data)
    f = data["adversary_share"]
    n_max = data["circuits_budget"]
    ticks = _ticks(n_max)

    def series(values: list[float], label: str) -> Series:
        return Series(label, [(n, values[n - 1]) for n in ticks])

    theory = series(c["no guards"]["theory"], f"theory 1-(1-f)^n, f={f:.3f}")
    # with one guard: located at the first circuit if the guard is the adversary's (probability about f,
    # its share of the Guard-flagged bandwidth), never otherwise
    flat = Series(f"theory with a guard: f={f:.3f}", [(n, f) for n in ticks])
    # the observed curve last, so that it is drawn over a theory line it coincides with
    panels = [
        Panel(f"no guards: P(located by circuit n), {c['no guards']['trials']} seeds", "circuits n",
              [theory, series(c["no guards"]["observed"], "observed")]),
        Panel(f"one guard: P(located by circuit n), {c['guards']['trials']} seeds", "circuits n",
              [theory, flat, series(c["guards"]["observed"], "observed")]),
    ]
    return render(panels, panel_width=520, height=360)


def render_html(data: dict, png_name: str) -> str:
    c = curves(data)
    f = data["adversary_share"]
    esc = html.escape
    rows = []
    for t in data["trials"]:
        where = (f"circuit {t['located_at']}, {t['seconds']} s, by {esc(t['located_by'] or '')}"
                 f" ({'right address' if t['correct'] else 'WRONG address'})" if t["located_at"]
                 else f"not located after {t['circuits']}")
        first_bad = _first_adversarial_hop(t, data)
        guard = ", ".join(t["guards"]) + (" (adversary)" if t["guard_adversarial"] else "") \
            if t["mode"] == "guards" else "none"
        rows.append(f"<tr><td>{esc(t['mode'])}</td><td>{t['seed']}</td><td>{esc(guard)}</td>"
                    f"<td>{where}</td><td>{first_bad}</td><td>{t['failed']}</td></tr>")
    no_guards = [k for k in c["no guards"]["located_at"] if k is not None]
    mean = f"{sum(no_guards) / len(no_guards):.1f}" if no_guards else "n/a"
    guarded_located = sum(1 for t in data["trials"] if t["mode"] == "guards" and t["located_at"])
    backend = data.get("backend", "local")
    rows_setting = [  # (what, here, the paper)
        ("network", f"{data['relays']} relays of our own on one machine ({backend} backend)",
         PAPER["network"]),
        ("adversary", f"{data['adversary_relays']} relays of one operator, f = {f:.3f} of the consensus "
                      f"bandwidth weight (1/f = {expected_circuits(f):.1f} circuits)", PAPER["adversary"]),
        ("attacker", "one client; a rendezvous point of the adversary's each attempt; the mark: "
                     f"{data['mark_cells']} DROP cells at once to the service", ""),
        ("countermeasure", "one entry guard (the default) against `guards: 0`", PAPER["countermeasure"]),
        ("result without guards", f"located in {len(no_guards)} of {c['no guards']['trials']} seeds, "
                                  f"mean {mean} circuits", ""),
        ("result with guards", f"located in {guarded_located} of {c['guards']['trials']} seeds; the "
                               f"service's guard was the adversary's in {c['guards']['adversarial_guards']}",
         ""),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td><td>{esc(p)}</td></tr>"
                    for k, v, p in rows_setting)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>guard discovery: {esc(data['lab'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:3px 8px;text-align:left;
vertical-align:top;border-bottom:1px solid #ddd}}</style></head><body>
<h1>The guard-discovery attack on {esc(data['lab'])}</h1>
<p>{esc(PAPER['authors'])}, "{esc(PAPER['title'])}", {esc(PAPER['venue'])}, beside this run
({data['seconds']} s). docs/attack.md says how it works.</p>
<img src="{esc(png_name)}" alt="P(located by circuit n), without and with entry guards">
<h2>Setting</h2><table><tr><th></th><th>here</th><th>the paper</th></tr>{table}</table>
<h2>Trials</h2>
<table><tr><th>mode</th><th>seed</th><th>service guard</th><th>located</th>
<th>first adversarial first hop (truth)</th><th>failed attempts</th></tr>{''.join(rows)}</table>
<h2>Data</h2><pre>{esc(json.dumps(c, indent=1))}</pre>
</body></html>
"""


def _first_adversarial_hop(trial: dict, data: dict) -> str:
    """The circuit whose first hop was first an adversary relay (from the service's own /status, which the
    adversary never sees): detection is right when this equals the located circuit."""
    bad = set(data.get("adversary_nicknames", ()))
    for i, hop in enumerate(trial["first_hops"], 1):
        if hop in bad:
            return f"circuit {i} ({html.escape(hop)})"
    return "none" if trial["first_hops"] else "unknown"


def write_report(data: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "attack.json", "png": out / "attack.png", "html": out / "attack.html"}
    paths["json"].write_text(json.dumps({**data, "curves": curves(data), "paper": PAPER}, indent=1) + "\n")
    paths["png"].write_bytes(render_png(data))
    paths["html"].write_text(render_html(data, paths["png"].name))
    return paths
