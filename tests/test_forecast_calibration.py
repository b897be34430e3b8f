"""The calibration benchmark on the bundled spirals model: its report, and intervals that hold
held-out observations near their nominal level (a loose bound: 30 spirals, one seed)."""

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.forecast_calibration import CENTRAL_LEVELS, KINDS, main, quantile_levels
from service.model.checkpoint import CONFIG_FILE


def test_quantile_levels_hold_both_ends_of_every_interval_and_the_median():
    levels = quantile_levels((0.5, 0.9))
    assert levels == [0.05, 0.25, 0.5, 0.75, 0.95]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration") / "calibration.json"
    main(["--spirals", "30", "--out", str(out)])
    return json.loads(out.read_text())


def test_report_covers_every_kind_and_level(report):
    assert report["command"].startswith("python -m benchmarks.forecast_calibration --spirals 30")
    assert set(report["kinds"]) == {"backcast", "interpolation", "extrapolation"}  # no unseen channels
    for kind in report["kinds"].values():
        assert kind["spirals"] == 30 and kind["values"] > 0
        shares = [kind["coverage"][f"{c:g}"]["share"] for c in CENTRAL_LEVELS]
        assert shares == sorted(shares)  # a wider interval holds at least as much
        for c in CENTRAL_LEVELS:
            low, high = kind["coverage"][f"{c:g}"]["bootstrap95"]
            assert low <= kind["coverage"][f"{c:g}"]["share"] <= high


@pytest.mark.parametrize("kind", ["interpolation", "extrapolation", "backcast"])
def test_ninety_percent_intervals_hold_about_ninety_percent(report, kind):
    assert 0.82 <= report["kinds"][kind]["coverage"]["0.9"]["share"] <= 0.98
    assert 0.6 <= report["kinds"][kind]["mean_squared_z"] <= 1.5


def test_the_models_own_training_seed_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["--spirals", "2", "--seed", "0", "--out", str(tmp_path / "x.json")])


def test_a_model_that_answers_unseen_channels_is_asked_for_them(tmp_path):
    bundled = Path(__file__).resolve().parents[1] / "models" / "spirals"
    copy = shutil.copytree(bundled, tmp_path / "spirals")
    config = json.loads((copy / CONFIG_FILE).read_text())
    (copy / CONFIG_FILE).write_text(json.dumps({**config, "unseen_channels": True}))
    report = main(["--model-dir", str(copy), "--spirals", "4", "--out", str(tmp_path / "out.json")])
    assert set(report["kinds"]) == set(KINDS)
    unseen, other = (report["kinds"][kind]["values"] for kind in KINDS[-2:])
    assert unseen == other > 0
