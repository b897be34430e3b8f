"""The Table 2 benchmark's smoke run: both models, every n, a JSON report and a table."""

import json

import numpy as np

from benchmarks.spirals_table2 import PAPER, main


def test_quick_run_writes_results(tmp_path, capsys):
    out = tmp_path / "table2.json"
    report = main(["--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m benchmarks.spirals_table2 --quick --out ")
    assert [r["num_observed"] for r in saved["results"]] == list(report["config"]["observed"])
    for result in saved["results"]:
        assert result["num_test"] > 0
        for model in ("latent_ode", "rnn"):
            assert np.isfinite(result[model]["rmse"]) and result[model]["rmse"] > 0
    printed = capsys.readouterr().out
    assert f"{PAPER['latent_ode'][30]:.4f}" in printed and "| Latent ODE (ours) |" in printed
