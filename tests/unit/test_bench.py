"""`make bench` keeps working: it prints one JSON object with a rate for every case. No timing is asserted."""

import json

from bench import cells, vs_tor
from bench.network import summary_ms


def test_bench_prints_json_with_every_case(capsys):
    assert cells.main(["--cells", "300", "--repetitions", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["results"]) == {"origin_encrypt_hop3", "relay_passthrough", "relay_recognized",
                                   "origin_data_cell_hop3"}
    assert all(isinstance(rate, int) and rate > 0 for rate in out["results"].values())
    assert out["goal"] == 100_000 and out["cells"] == 300
    assert out["meets_goal"] == all(rate >= 100_000 for rate in out["results"].values())


def test_vs_tor_ratios_are_onionlab_over_tor_with_the_goals():
    def result(bulk_ours, ttfb_ours):
        return {"bulk_MBps": {"tor": vs_tor.rates([4.0, 5.0, 6.0]), "onionlab": vs_tor.rates(bulk_ours)},
                "warm_ttfb_ms": {"tor": summary_ms([0.030, 0.040]), "onionlab": summary_ms(ttfb_ours)},
                "cold_connect_ms": {"tor": summary_ms([0.5]), "onionlab": summary_ms([0.25])}}

    ratios = vs_tor.ratios(result([14.0, 15.0, 99.0], [0.009, 0.012]))
    # medians: bulk 15 / 5; p50 of [30, 40] ms is the median 35; ours 10.5
    assert ratios["bulk"] == 3.0 and ratios["warm_ttfb_p50"] == 0.3 and ratios["cold_connect_p50"] == 0.5
    assert ratios["meets_goals"] is True
    assert vs_tor.ratios(result([14.0, 14.9, 99.0], [0.009, 0.012]))["meets_goals"] is False
    assert vs_tor.ratios(result([15.0], [0.011, 0.012]))["meets_goals"] is False


def test_vs_tor_reports_per_round_ratios_with_their_spread_and_a_table():
    result = {"bulk_MBps": {"tor": vs_tor.rates([4.0, 5.0, 2.0]), "onionlab": vs_tor.rates([12.0, 10.0, 8.0]),
                            "onionlab@HEAD~1": vs_tor.rates([4.0, 5.0, 2.0])},
              "warm_ttfb_ms": {name: {**summary_ms([0.01]), "round_p50": p50s} for name, p50s in (
                  ("tor", [30.0, 40.0, 20.0]), ("onionlab", [9.0, 20.0, 4.0]),
                  ("onionlab@HEAD~1", [30.0] * 3))},
              "cold_connect_ms": {name: summary_ms([0.5]) for name in ("tor", "onionlab", "onionlab@HEAD~1")}}
    ratios = vs_tor.ratios(result)
    assert ratios["bulk_per_round"] == {"median": 3.0, "min": 2.0, "max": 4.0, "rounds": [3.0, 2.0, 4.0]}
    assert ratios["warm_ttfb_p50_per_round"] == {"median": 0.3, "min": 0.2, "max": 0.5,
                                                 "rounds": [0.3, 0.5, 0.2]}
    result["ratios_onionlab_over_tor"] = ratios
    result["ratios_onionlab@HEAD~1_over_tor"] = vs_tor.ratios(result, "onionlab@HEAD~1")
    text = vs_tor.table(result)
    assert "onionlab / tor: bulk 2.50x" in text and "per round: bulk 3.00 [2.00-4.00]" in text
    assert "onionlab@HEAD~1 / tor: bulk 1.00x" in text
