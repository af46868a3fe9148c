"""The Prometheus text rendering: integers exact, floats with every digit they have."""

import math

from nodes.net.metrics import Metrics


def _line(metrics: Metrics, series: str) -> str:
    return next(line for line in metrics.render().splitlines()
                if line.split(" ")[0].split("{")[0] == f"onionlab_{series}")


def test_integers_are_exact():
    metrics = Metrics()
    metrics.set("consensus_valid_after", 1_796_620_800)
    metrics.inc("socks_bytes_total", 123_456_789, direction="up")
    metrics.inc("socks_bytes_total", 1, direction="up")
    metrics.set("links_open", 0)
    metrics.inc("big_total", 2**60 + 1)  # past float precision: still every digit
    assert _line(metrics, "consensus_valid_after") == "onionlab_consensus_valid_after 1796620800"
    assert _line(metrics, "socks_bytes_total") == 'onionlab_socks_bytes_total{direction="up"} 123456790'
    assert _line(metrics, "links_open") == "onionlab_links_open 0"
    assert _line(metrics, "big_total") == f"onionlab_big_total {2**60 + 1}"


def test_floats_keep_their_precision():
    metrics = Metrics()
    metrics.observe("connect_seconds", 1234.5678901)
    metrics.observe("connect_seconds", 0.1)
    metrics.set("ratio", 1 / 3)
    metrics.set("up", math.inf)
    metrics.set("down", -math.inf)
    metrics.set("unknown", math.nan)
    assert float(_line(metrics, "connect_seconds_sum").split()[-1]) == 1234.5678901 + 0.1
    assert _line(metrics, "connect_seconds_count") == "onionlab_connect_seconds_count 2"
    assert _line(metrics, "ratio") == f"onionlab_ratio {1 / 3!r}"
    assert _line(metrics, "up") == "onionlab_up +Inf"  # the exposition format's spellings
    assert _line(metrics, "down") == "onionlab_down -Inf"
    assert _line(metrics, "unknown") == "onionlab_unknown NaN"
