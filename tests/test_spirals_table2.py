"""The Table 2 benchmark's smoke run: both models, every n, a JSON report and a table."""

import json

import numpy as np
import pytest

from benchmarks.spirals_table2 import PAPER, BenchmarkConfig, main, with_settings
from service.model.forecaster import Forecaster


def test_quick_run_writes_results(tmp_path, capsys):
    out = tmp_path / "table2.json"
    report = main(["--quick", "--out", str(out), "--save-models", str(tmp_path / "models")])
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m benchmarks.spirals_table2 --quick --out ")
    assert [r["num_observed"] for r in saved["results"]] == list(report["config"]["observed"])
    for result in saved["results"]:
        assert result["num_test"] > 0
        for model in ("latent_ode", "rnn"):
            assert np.isfinite(result[model]["rmse"]) and result[model]["rmse"] > 0
            (run,) = result[model]["runs"]
            by_spiral = np.array(run["rmse_by_spiral"])
            assert by_spiral.shape == (result["num_test"],)
            assert np.sqrt(np.mean(by_spiral ** 2)) == pytest.approx(run["rmse"], rel=1e-3)
        kept = Forecaster.load(tmp_path / "models" / f"latent_ode-n{result['num_observed']}-seed0")
        assert kept.metrics["epoch"] == result["latent_ode"]["runs"][0]["selected_epoch"]
    printed = capsys.readouterr().out
    assert f"{PAPER['latent_ode'][30]:.4f}" in printed and "| Latent ODE (ours) |" in printed


def test_parallel_run_gives_the_serial_results(tmp_path):
    serial = main(["--quick", "--observed", "30", "--out", str(tmp_path / "serial.json")])["results"]
    parallel = main(["--quick", "--observed", "30", "--jobs", "2", "--out", str(tmp_path / "parallel.json")])
    for one, other in zip(serial, parallel["results"], strict=True):
        for model in ("latent_ode", "rnn"):
            assert one[model]["rmse"] == other[model]["rmse"]
            timeless = [[{k: v for k, v in run.items() if k != "wall_s"} for run in result[model]["runs"]]
                        for result in (one, other)]
            assert timeless[0] == timeless[1]


def test_each_training_seed_is_a_run_and_the_table_gives_their_mean(tmp_path, capsys):
    report = main(["--quick", "--observed", "30", "--seeds", "0", "1", "--jobs", "2",
                   "--out", str(tmp_path / "seeds.json")])
    (result,) = report["results"]
    for model in ("latent_ode", "rnn"):
        runs = result[model]["runs"]
        assert [run["training_seed"] for run in runs] == [0, 1]
        assert runs[0]["rmse"] != runs[1]["rmse"]
        assert result[model]["rmse"] == pytest.approx(np.mean([run["rmse"] for run in runs]))
    printed = capsys.readouterr().out
    assert "| Latent ODE (ours, mean ± std over the seeds below) |" in printed
    assert f"| Latent ODE (ours, seed 1) | {result['latent_ode']['runs'][1]['rmse']:.4f} |" in printed


def test_merge_combines_separate_runs_of_one_protocol(tmp_path, capsys):
    one = main(["--quick", "--observed", "30", "100", "--seeds", "0", "--out", str(tmp_path / "a.json")])
    two = main(["--quick", "--observed", "30", "--seeds", "1", "--out", str(tmp_path / "b.json")])
    report = main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                   "--out", str(tmp_path / "merged.json")])
    assert json.loads((tmp_path / "merged.json").read_text()) == report
    assert report["config"]["observed"] == [30, 100] and report["config"]["training_seeds"] == [0, 1]
    assert [source["command"] for source in report["merged_from"]] == [one["command"], two["command"]]
    at_30, at_100 = report["results"]
    for model in ("latent_ode", "rnn"):
        assert [run["rmse"] for run in at_30[model]["runs"]] == [one["results"][0][model]["rmse"],
                                                                 two["results"][0][model]["rmse"]]
        assert at_30[model]["rmse"] == pytest.approx(np.mean([run["rmse"] for run in at_30[model]["runs"]]))
        assert [run["training_seed"] for run in at_100[model]["runs"]] == [0]
    printed = capsys.readouterr().out
    assert f"| Latent ODE (ours, seed 1) | {at_30['latent_ode']['runs'][1]['rmse']:.4f} | - |" in printed

    first, other, out = (str(tmp_path / name) for name in ("a.json", "c.json", "m.json"))
    with pytest.raises(SystemExit, match="repeats latent_ode at n = 30, seed 0"):
        main(["--merge", first, first, "--out", out])
    main(["--quick", "--observed", "30", "--seeds", "2", "--set", "lr=0.02", "--out", other])
    with pytest.raises(SystemExit, match="another protocol than .*a.json \\(trainer\\)"):
        main(["--merge", first, other, "--out", out])


def test_set_changes_the_shared_trainer_config():
    settings = ["latent_dim=8", "min_window_fraction=1.0", "adjoint=true"]
    config = with_settings(BenchmarkConfig().trainer, settings)
    assert (config.latent_dim, config.min_window_fraction, config.adjoint) == (8, 1.0, True)
    with pytest.raises(SystemExit, match="no_such_field"):
        with_settings(config, ["no_such_field=1"])
    with pytest.raises(SystemExit, match="--seeds"):
        with_settings(config, ["seed=1"])
