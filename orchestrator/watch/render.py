"""A Snapshot (snapshot.py) as rich renderables: a summary line, a table of the nodes, the faults in place."""

from __future__ import annotations

from datetime import datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .snapshot import NodeView, Snapshot

STALE_CONSENSUS = 3.0  # a consensus older than this many voting intervals is shown as stale (in red)


def render(snapshot: Snapshot) -> Group:
    return Group(summary(snapshot), nodes_table(snapshot), faults(snapshot))


def summary(snapshot: Snapshot) -> Text:
    ages = [n.consensus_age for n in snapshot.nodes if n.consensus_age is not None]
    age = f"{min(ages):.0f}-{max(ages):.0f} s" if ages else "none"
    text = Text()
    when = datetime.fromtimestamp(snapshot.taken)
    text.append(f"lab {snapshot.lab} ({snapshot.backend})  {when:%H:%M:%S}  ", style="bold")
    total = len(snapshot.nodes)
    text.append(f"ready {snapshot.ready}/{total}", style="green" if snapshot.ready == total else "yellow")
    text.append(f"  consensus age {age}")
    fetches, failures = snapshot.total("fetches") or 0, snapshot.total("failures") or 0
    text.append(f"  fetches {fetches:.0f} ok, {failures:.0f} failed")
    rate = snapshot.total("fetch_rate")
    if rate is not None:
        text.append(f" ({rate:.2f}/s ok, {snapshot.total('failure_rate') or 0:.2f}/s failed)")
    text.append(f"  errors {snapshot.total('errors') or 0:.0f}",
                style="red" if snapshot.total("error_rate") else "")
    return text


def nodes_table(snapshot: Snapshot) -> Table:
    table = Table(expand=False, pad_edge=False, box=None, header_style="bold")
    for column, justify in (("node", "left"), ("role", "left"), ("state", "left"), ("consensus", "right"),
                            ("circuits", "right"), ("links", "right"), ("descriptors", "right"),
                            ("intro points", "left"), ("fetches/s", "right"), ("errors", "right")):
        table.add_column(column, justify=justify, no_wrap=True)
    for node in snapshot.nodes:
        table.add_row(node.name, node.role, _state(node), _age(node, snapshot.voting_interval),
                      _num(node.circuits), _num(node.links), _num(node.descriptors), _intro(node),
                      _fetch(node), _errors(node))
    return table


def faults(snapshot: Snapshot) -> Text:
    if not snapshot.faults:
        return Text("chaos faults in place: none", style="dim")
    text = Text("chaos faults in place: ", style="bold red")
    text.append(", ".join(f"{f.get('fault')} {f.get('node')}" for f in snapshot.faults))
    return text


def _state(node: NodeView) -> Text:
    if node.state != "up":
        return Text(node.state, style="bold red")
    if node.ready:
        return Text("ready", style="green")
    return Text("waiting: " + ", ".join(node.waiting), style="yellow")


def _age(node: NodeView, voting_interval: float | None) -> Text:
    if node.consensus_age is None:
        return Text("-")
    stale = voting_interval is not None and node.consensus_age > STALE_CONSENSUS * voting_interval
    return Text(f"{node.consensus_age:.0f} s", style="red" if stale else "")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _intro(node: NodeView) -> str:
    if node.intro_points:
        return ",".join(node.intro_points)
    return f"for {node.intro_for}" if node.intro_for else "-"


def _fetch(node: NodeView) -> str:
    if node.role != "client":
        return "-"
    total = f"{node.fetches:.0f} ok" + (f", {node.failures:.0f} failed" if node.failures else "")
    return total if node.fetch_rate is None else f"{node.fetch_rate:.2f} ({total})"


def _errors(node: NodeView) -> Text:
    text = f"{node.errors:.0f}" + (f" (+{node.error_rate:.2f}/s)" if node.error_rate else "")
    return Text(text, style="red" if node.error_rate else "")
