"""`make bench` keeps working: it prints one JSON object with a rate for every case. No timing is asserted."""

import json

from bench import cells


def test_bench_prints_json_with_every_case(capsys):
    assert cells.main(["--cells", "300", "--repetitions", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["results"]) == {"origin_encrypt_hop3", "relay_passthrough", "relay_recognized",
                                   "origin_data_cell_hop3"}
    assert all(isinstance(rate, int) and rate > 0 for rate in out["results"].values())
    assert out["goal"] == 100_000 and out["cells"] == 300
    assert out["meets_goal"] == all(rate >= 100_000 for rate in out["results"].values())
