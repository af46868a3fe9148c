"""Counters, gauges and summaries rendered in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    parts = []
    for k, v in sorted(labels.items()):
        v = str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{k}="{v}"')
    return "{" + ",".join(parts) + "}"


def _value(v: float) -> str:
    """Integers exactly (byte counters, Unix times); floats with every digit (repr), in the format's
    spelling of the infinities and NaN."""
    if isinstance(v, int):
        return str(int(v))  # int(): a bool would print as True
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


class Metrics:
    """One registry per node. Names are prefixed `onionlab_`; counters end in `_total`."""

    def __init__(self) -> None:
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[tuple, float]] = defaultdict(dict)
        self._summaries: set[str] = set()

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._help[name] = (kind, help_text)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self._values[name]
        series[key] = series.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """A summary without quantiles: `_sum` and `_count`, enough for averages in Prometheus."""
        self._summaries.add(name)
        self.inc(f"{name}_sum", seconds, **labels)
        self.inc(f"{name}_count", 1, **labels)

    def value(self, name: str, **labels: str) -> float:
        return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def _family(self, series: str) -> str:
        for suffix in ("_sum", "_count"):
            if series.endswith(suffix) and series.removesuffix(suffix) in self._summaries:
                return series.removesuffix(suffix)
        return series

    def render(self) -> str:
        families: dict[str, list[str]] = defaultdict(list)
        for series in sorted(self._values):
            families[self._family(series)].append(series)
        lines = []
        for family, members in sorted(families.items()):
            default_kind = "summary" if family in self._summaries else "untyped"
            kind, text = self._help.get(family, (default_kind, family))
            lines += [f"# HELP onionlab_{family} {text}", f"# TYPE onionlab_{family} {kind}"]
            for series in members:
                for key, v in sorted(self._values[series].items()):
                    lines.append(f"onionlab_{series}{_labels(dict(key))} {_value(v)}")
        return "\n".join(lines) + "\n"
