"""The latent-ODE trainer: it learns, it resumes exactly, it validates its inputs."""

import json
import re

import numpy as np
import pytest
import torch
from latent_fixtures import sine_series, tiny_config

from service.model.batching import collate
from service.model.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    train_state_path,
)
from service.model.forecaster import Forecaster, ForecastQuery
from service.model.latent_ode import LatentODE
from service.model.series import Normalization, Series, constant_channels
from training.__main__ import main as training_main
from training.augment import context_count, hide_channel, prefix, subsample, suffix, window
from training.data.csv_series import load_csv
from training.holdout import holdout_split
from training.latent_ode import train
from training.latent_ode_config import TrainConfig
from training.train_state import KIND as STATE_KIND
from training.train_state import save_train_state

torch.set_num_threads(1)


def training_loss(model: LatentODE, series: list[Series], normalization) -> float:
    batch = collate([Series(normalization.times(s.times), normalization.values(s.values)) for s in series])
    with torch.no_grad():
        return model(batch, num_samples=8, generator=torch.Generator().manual_seed(0)).loss.item()


def test_short_training_lowers_the_loss():
    config = tiny_config(epochs=6, kl_warmup_epochs=2)
    train_series = sine_series(24, 14, seed=0)
    forecaster, metrics = train(config, train_series, sine_series(6, 14, seed=1),
                                test_series=sine_series(4, 14, seed=2))
    torch.manual_seed(config.seed)
    untrained = LatentODE(config.model_config(2))
    before = training_loss(untrained, train_series, forecaster.normalization)
    after = training_loss(forecaster.model, train_series, forecaster.normalization)
    assert after < 0.75 * before
    assert 1 <= metrics["epoch"] <= 6
    for name in ("val_interp_mse", "val_extrap_mse", "val_backcast_mse", "val_future_rmse", "test_interp_mse",
                 "test_extrap_mse", "test_backcast_mse", "test_future_rmse"):
        assert np.isfinite(metrics[name]) and metrics[name] > 0, name
    # the backcasts are measured and reported, not selected by
    assert metrics["val_mse"] == pytest.approx((metrics["val_interp_mse"] + metrics["val_extrap_mse"]) / 2)
    for part in ("val_interp", "val_extrap", "val_backcast", "val_future", "test_interp", "test_extrap",
                 "test_backcast", "test_future"):
        assert 0 <= metrics[f"{part}_coverage90"] <= 1


def last_weights(out):
    """The raw and (when kept) averaged weights in a run's training state."""
    _, tensors = load_checkpoint(train_state_path(out), kind=STATE_KIND)
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "average."))}


@pytest.mark.parametrize(("ema_decay", "backcast_fraction"), [(0.0, 0.0), (0.9, 0.0), (0.0, 0.5)])
def test_resume_continues_exactly(tmp_path, ema_decay, backcast_fraction):
    data = sine_series(10, 10, seed=0), sine_series(3, 10, seed=1)
    augment = dict(optimizer="adamax", min_window_fraction=0.7, min_keep_fraction=0.6,
                   min_context_fraction=0.5, ema_decay=ema_decay, backcast_fraction=backcast_fraction,
                   hide_channel_fraction=backcast_fraction)
    config = tiny_config(epochs=2, **augment)
    train(config, *data, out=tmp_path / "straight")
    train(tiny_config(epochs=1, **augment), *data, out=tmp_path / "split")
    train(config, *data, out=tmp_path / "split", resume=True)
    straight, resumed = last_weights(tmp_path / "straight"), last_weights(tmp_path / "split")
    assert straight.keys() == resumed.keys()
    assert any(k.startswith("average.") for k in straight) == bool(ema_decay)
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match=r"changed: lr"):
        train(tiny_config(epochs=3, lr=0.5, **augment), *data, out=tmp_path / "split", resume=True)
    fewer = data[0][:-1], data[1]  # the same config, other data: the weights would mix two data sets
    with pytest.raises(CheckpointError, match=r"the data differ"):
        train(tiny_config(epochs=3, **augment), *fewer, out=tmp_path / "split", resume=True)


def test_a_checkpoint_is_marked_finished_only_when_its_run_ends(tmp_path, monkeypatch):
    """An interrupted or failed run leaves its best epoch so far in --out, which a server listed
    like a finished model; and --resume with no epoch left to train silently did nothing."""
    data = sine_series(8, 10, seed=0), sine_series(3, 10, seed=1)
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr("training.latent_ode.future_targets", interrupted)  # after the last epoch
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(epochs=2), *data, out=out)
    unfinished = Forecaster.load(out)
    assert unfinished.finished is False and "val_future_rmse" not in unfinished.metrics
    with pytest.raises(ValueError, match=r"--resume: the run in .* has already trained 2 epochs; --epochs "
                                         r"counts all of a run's epochs \(here 1\), not more ones: pass more "
                                         r"than 2 to train on"):
        train(tiny_config(epochs=1), *data, out=out, resume=True)
    train(tiny_config(epochs=2), *data, out=out, resume=True)  # no epoch left: the run's end only
    finished = Forecaster.load(out)
    assert finished.finished is True and "val_future_rmse" in finished.metrics
    assert finished.metrics["epoch"] == unfinished.metrics["epoch"]
    with pytest.raises(ValueError, match=r"has already trained 2 epochs; .* \(here 2\)"):
        train(tiny_config(epochs=2), *data, out=out, resume=True)
    with monkeypatch.context() as patch:  # a finished run continued, and stopped before its next epoch ends
        patch.setattr("training.latent_ode.train_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(epochs=3), *data, out=out, resume=True)
    assert Forecaster.load(out).finished is False  # it said true, and then refused to be resumed
    train(tiny_config(epochs=2), *data, out=out, resume=True)  # ends it again
    assert Forecaster.load(out).finished is True
    config = json.loads((out / CONFIG_FILE).read_text())
    del config["finished"]  # as checkpoints were written before the flag
    (out / CONFIG_FILE).write_text(json.dumps(config))
    assert Forecaster.load(out).finished is True


def test_the_moving_average_is_what_is_validated_and_kept(tmp_path):
    data = sine_series(10, 10, seed=0), sine_series(3, 10, seed=1)
    _, metrics = train(tiny_config(epochs=1, ema_decay=0.9), *data, out=tmp_path / "run")
    _, kept = load_checkpoint(tmp_path / "run", kind="latent_ode")
    state = last_weights(tmp_path / "run")
    assert metrics["epoch"] == 1
    for name, tensor in kept.items():
        torch.testing.assert_close(tensor, state[f"average.module.{name}"], rtol=0, atol=0)
    assert any(not torch.equal(tensor, state[f"model.{name}"]) for name, tensor in kept.items())
    with pytest.raises(ValueError, match="ema_decay"):
        train(tiny_config(ema_decay=1.5), *data)


def test_bad_training_data_is_named():
    good = sine_series(4, 8, seed=0)
    broken = Series([0.0, 1.0, 2.0], [[1.0, 2.0], [np.nan, np.nan], [1.0, 1.0]], "broken")
    with pytest.raises(ValueError, match="'broken': row 1 has no observed channel"):
        train(tiny_config(), good + [broken], good)
    with pytest.raises(ValueError, match="channel names"):
        train(tiny_config(), good, good, channels=["only-one"])


def test_holdout_split_keeps_targets_apart():
    s = sine_series(1, 40, seed=4)[0]
    split = holdout_split(s, extrap_fraction=0.25, interp_fraction=0.5, rng=np.random.default_rng(0))
    n = s.times.size
    assert split.extrap_times.size == n // 4
    assert split.context.times[-1] < split.extrap_times[0]
    assert split.context.times[0] < split.interp_times.min()
    assert split.interp_times.max() < split.context.times[-1]
    everything = np.sort(np.concatenate([split.context.times, split.interp_times, split.extrap_times]))
    np.testing.assert_array_equal(everything, s.times)
    assert holdout_split(Series([0.0, 1.0], [[1.0], [2.0]]), 0.5, 0.2, np.random.default_rng(0)) is None


def test_augmentations_keep_order_and_size_bounds():
    s = sine_series(1, 40, seed=5)[0]
    rng = np.random.default_rng(0)
    for _ in range(20):
        w, k, p = window(s, 0.5, rng), subsample(s, 0.5, rng), prefix(s, 0.5, 1.0, rng)
        x = suffix(s, 0.5, 0.7, rng)
        start = int(np.searchsorted(s.times, w.times[0]))
        np.testing.assert_array_equal(w.times, s.times[start:start + w.times.size])
        np.testing.assert_array_equal(p.times, s.times[:p.times.size])
        np.testing.assert_array_equal(x.times, s.times[-x.times.size:])
        np.testing.assert_array_equal(x.values, s.values[-x.times.size:])
        assert np.isin(k.times, s.times).all() and np.all(np.diff(k.times) > 0)
        assert min(w.times.size, k.times.size, p.times.size, x.times.size) >= np.ceil(0.5 * s.times.size)
        assert x.times.size <= np.ceil(0.7 * s.times.size)


def test_hide_channel_keeps_one_channel_from_the_encoder():
    rng = np.random.default_rng(0)
    s = Series([0.0, 1.0, 2.0, 3.0], [[1.0, np.nan], [2.0, 5.0], [np.nan, 6.0], [4.0, 7.0]], "s")
    hidden = {}
    for _ in range(40):
        h = hide_channel(s, rng)
        gone = int(np.flatnonzero(~h.mask.any(axis=0))[0])
        hidden[gone] = h.times.tolist()
        assert not np.isnan(h.values).all(axis=1).any()      # no row left without a value
        np.testing.assert_array_equal(h.values[:, 1 - gone], s.values[np.isin(s.times, h.times), 1 - gone])
    assert hidden == {0: [1.0, 2.0, 3.0], 1: [0.0, 1.0, 3.0]}  # each channel in turn, its only rows dropped
    one_channel = Series([0.0, 1.0], [[1.0], [2.0]], "one")
    assert hide_channel(one_channel, rng) is one_channel
    sparse = Series([0.0, 1.0, 2.0], [[1.0, np.nan], [np.nan, 2.0], [np.nan, 3.0]], "sparse")
    assert hide_channel(sparse, np.random.default_rng(1)).times.size >= 2   # x alone would leave 1 row


def test_context_count_stays_within_its_fractions():
    rng = np.random.default_rng(0)
    assert {context_count(41, 0.5, 0.5, rng) for _ in range(50)} == {21}
    counts = {context_count(100, 0.3, 0.6, rng) for _ in range(2000)}
    assert counts == set(range(30, 61))
    assert context_count(3, 0.5, 0.5, rng) == 2   # at least 2 where the series allows
    for low, high in ((0.6, 0.5), (0.0, 0.5), (0.5, 1.2)):
        with pytest.raises(ValueError, match="min_context_fraction <= max_context_fraction"):
            TrainConfig(min_context_fraction=low, max_context_fraction=high)


@pytest.mark.parametrize(("settings", "words"), [
    (dict(backcast_fraction=-0.1), "backcast_fraction must be in [0, 1), got -0.1"),
    (dict(backcast_fraction=1.0), "backcast_fraction must be in [0, 1), got 1.0"),   # no forecast trained
    (dict(backcast_fraction=float("nan")), "backcast_fraction must be in [0, 1), got nan"),
    (dict(hide_channel_fraction=-0.5), "hide_channel_fraction must be in [0, 1], got -0.5"),
    (dict(hide_channel_fraction=2.0), "hide_channel_fraction must be in [0, 1], got 2.0"),
])
def test_backcast_fraction_is_checked(settings, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        TrainConfig(**settings)


@pytest.mark.parametrize(("args", "words"), [
    (["--data", "no-such-file.csv"], "No such file or directory: 'no-such-file.csv'"),
    (["--batch-size", "-3"], "batch_size must be at least 1, got -3"),
    (["--encoder", "transformer"], "encoder must be one of"),
    (["--device", "tpu9"], "--device 'tpu9' is not a device"),
])
def test_the_command_line_reports_a_users_mistake_in_one_line(tmp_path, capsys, args, words):
    assert words in refusal(capsys, "--out", str(tmp_path / "run"), "--epochs", "1", *args)


def refusal(capsys, *args: str) -> str:
    """The one-line message with which ``python -m training latent-ode ARGS`` exits 2."""
    with pytest.raises(SystemExit) as exit_:
        training_main(["latent-ode", *args])
    message = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in message and message.count("\n") == 1
    assert message.startswith("python -m training latent-ode: error: ")
    return message


@pytest.mark.parametrize(("args", "words"), [
    (["--threads", "-1"], "--threads must be from 1 to 1024, got -1 (leave it out for torch's choice)"),
    (["--threads", "0"], "--threads must be from 1 to 1024, got 0"),
    (["--threads", "99999999999999999999"], "--threads must be from 1 to 1024"),
    (["--seed", "-1"], "seed must be from 0 to 18446744073709551615, got -1"),
    (["--seed", "18446744073709551616"], "seed must be from 0 to 18446744073709551615"),
    (["--iwae-samples", "99999999999999999999"], "iwae_samples must be from 1 to 256"),
    (["--val-samples", "1000000000"], "val_samples must be from 1 to 256, got 1000000000"),
    (["--lr-decay", "3"], "lr_decay must be in (0, 1], got 3.0"),
    (["--extrap-fraction", "1"], "extrap_fraction must be in (0, 1), got 1.0"),
])
def test_flags_out_of_range_are_refused_before_the_data_is_read(tmp_path, capsys, args, words):
    """They failed with a traceback, a message without the flag's name, an 80 GB allocation
    after a full epoch, or (lr_decay 3) a diverged run blamed on --lr."""
    message = refusal(capsys, "--data", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "run"), *args)
    assert words in message


def test_an_unusable_out_is_refused_before_the_data_is_read(tmp_path, capsys):
    """It was found only when the first epoch's checkpoint was written."""
    a_file = tmp_path / "a.csv"
    a_file.write_text("series_id,time,x\n")
    absent = str(tmp_path / "absent.csv")
    for out, words in (("", "--out '' does not name a directory of its own"),
                       (".", "--out '.' does not name a directory of its own"),
                       (str(a_file), f"--out {a_file}: a file is there"),
                       (str(a_file / "run"), f"--out {a_file / 'run'}: {a_file} is a file"),
                       ("/proc/odecast-absent/run", "--out /proc/odecast-absent/run: cannot write in /proc")):
        assert words in refusal(capsys, "--data", absent, "--out", out)
    message = refusal(capsys, "--data", absent, "--out", str(tmp_path / "run"), "--resume")
    assert f"--resume: nothing to resume: {tmp_path / 'run'} holds no earlier run" in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.csv"]  # nothing left behind
    # '--out runs' for '--out runs/my-model': the checkpoint would have replaced runs/ and its models
    (tmp_path / "runs" / "older-model").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "runs" / "older-model")
    for out, words in ((tmp_path / "runs", "a directory that holds other things and no checkpoint"),
                       (tmp_path / "link", "is a symbolic link")):
        assert words in refusal(capsys, "--data", absent, "--out", str(out))
    assert (tmp_path / "runs" / "older-model").is_dir()


def test_the_working_directory_is_no_out(tmp_path, monkeypatch, capsys):
    """Run from inside an empty run/, '--out ../run' saved over the working directory, then failed
    with a traceback."""
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    for out in ("../run", str(tmp_path)):
        assert "the working directory or holds it" in refusal(capsys, "--data", "absent.csv", "--out", out)


def test_a_resume_into_a_checkpoint_holding_a_folder_is_refused_before_training(tmp_path, capsys):
    """It was found when the first better epoch was saved: that epoch's training was lost."""
    out = tmp_path / "run"
    (out / ".ipynb_checkpoints").mkdir(parents=True)
    (out / CONFIG_FILE).write_text("{}")
    message = refusal(capsys, "--data", str(tmp_path / "absent.csv"), "--out", str(out), "--resume")
    assert "holds '.ipynb_checkpoints', which is no part of a checkpoint" in message


def test_a_checkpoint_never_replaces_a_directory_holding_other_things(tmp_path):
    """The trainers check --out first; this is the last guard: a save kept only plain files."""
    (tmp_path / "runs" / "older-model").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="holds 'older-model', which is no part of a checkpoint"):
        save_checkpoint(tmp_path / "runs", "latent_ode", {"w": torch.zeros(1)}, {})
    assert (tmp_path / "runs" / "older-model").is_dir()
    assert [path.name for path in tmp_path.iterdir()] == ["runs"]  # no staging directory left


def test_one_series_far_longer_than_the_rest_is_refused(tmp_path):
    train_series, val_series = sine_series(10, 10, seed=0), sine_series(3, 10, seed=1)
    wrong = train_series[4]
    train_series[4] = Series(np.append(wrong.times[:-1], 1e12), wrong.values, wrong.id)  # one wrong date
    with pytest.raises(ValueError, match=rf"series {wrong.id!r} spans 1e\+12 .* times the median series"):
        train(tiny_config(epochs=1), train_series, val_series, out=tmp_path / "run")


def test_a_channel_that_no_training_series_observes_is_refused(tmp_path):
    """It was trained on with a made-up mean 0 and std 1, and the run died at its very end."""
    train_series, val_series = sine_series(6, 10, seed=0), sine_series(3, 10, seed=1)
    for s in train_series:
        s.values[:, 1] = np.nan
        s.values[:, 0] = 0.5
    with pytest.raises(ValueError, match=rf"channel 'b' is observed in no training series \(first in "
                                         rf"validation series {val_series[0].id!r}\)"):
        train(tiny_config(epochs=1), train_series, val_series, channels=["a", "b"], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_held_out_values_beyond_what_a_served_model_reads_are_refused(tmp_path):
    train_series, val_series = sine_series(6, 10, seed=0), sine_series(3, 10, seed=1)
    test_series = sine_series(2, 10, seed=2)
    test_series[1].values[2, 0] = 1e4
    with pytest.raises(ValueError, match=rf"test series {test_series[1].id!r}: channel 'c0' is 10000 at time "
                                         r".*training standard deviations from the training mean"):
        train(tiny_config(epochs=1), train_series, val_series, test_series=test_series, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_run_says_what_it_trains_on_before_it_starts(capsys):
    """It printed nothing about the data: a numeric column taken for a channel, the time unit,
    the split, a constant channel or series left out of the metrics showed only in config.json."""
    train_series, val_series = sine_series(6, 10, seed=0), sine_series(3, 10, seed=1)
    for s in train_series:
        s.values[:, 1] = 2.0
    too_short = Series([0.0, 1.0], [[0.5, 2.0], [0.4, 2.0]], "too-short")
    train(tiny_config(epochs=1), train_series, [*val_series, too_short], test_series=[too_short],
          channels=["a", "b"], time_unit="hours", source="csv:mine.csv")
    assert capsys.readouterr().out.splitlines()[0] == (
        "data csv:mine.csv: 11 series, channels 'a', 'b', times in hours; 6 training, 4 validation, 1 test; "
        "1 validation series of fewer than 3 points, left out of the metrics; 1 test series of fewer than 3 "
        "points, left out of the metrics; channel 'b' is constant (2) in the training series: nothing to "
        "learn from it")


def test_a_split_without_a_training_or_a_measurable_validation_series_says_what_the_data_hold():
    """'need at least one training and one validation series' and 'no validation series is long
    enough' said neither how many series there were nor what to change."""
    series = sine_series(5, 10, seed=0)
    with pytest.raises(ValueError, match=r"the data hold 1 series \(1 training, 0 validation, 0 test\): "
                                         r"a run needs 2 series or more"):
        train(tiny_config(epochs=1), series[:1], [])
    with pytest.raises(ValueError, match=r"the data hold 5 series \(5 training, 0 validation, 0 test\): "
                                         r"--val-fraction is 0"):
        train(tiny_config(epochs=1, val_fraction=0), series, [])
    pairs = [Series(s.times[:2], s.values[:2], s.id) for s in sine_series(2, 10, seed=1)]
    with pytest.raises(ValueError, match=r"\(with extrap_fraction 0.5, 3 points or more\): the longest of "
                                         r"the 2 validation series has 2; 5 of all 7 series are: another "
                                         r"--seed or a larger --val-fraction puts some in validation"):
        train(tiny_config(epochs=1), series, pairs)
    fours = [Series(s.times[:4], s.values[:4]) for s in series]
    with pytest.raises(ValueError, match=r"\(with extrap_fraction 0.75, 5 points or more\): .*; none of all "
                                         r"7 series is: give longer series"):
        train(tiny_config(epochs=1, extrap_fraction=0.75), fours, pairs)


def test_a_validation_value_beyond_the_training_values_names_its_csv_line(tmp_path):
    outlier = ("c", 2)  # on line 12: the header, then four rows for each of a, b and c
    rows = [f"{name},{t},{t % 2 + (500 if (name, t) == outlier else 0)}\n"
            for name in "abc" for t in range(4)]
    (tmp_path / "data.csv").write_text("series_id,time,x\n" + "".join(rows))
    data = load_csv(tmp_path / "data.csv")
    with pytest.raises(ValueError, match=r"validation series 'c': channel 'x' is 500 at time 2 \(CSV line "
                                         r"12\), .* check that value; if it is right, the training series "
                                         r"do not cover it \(another --seed splits differently\)"):
        train(tiny_config(epochs=1), data.series[:2], data.series[2:], channels=data.channels)


def test_values_too_large_to_standardise_are_refused():
    series = sine_series(4, 10, seed=0)
    series[1].values[3, 1] = 1.7e308
    with pytest.raises(ValueError, match="channel 1: its values are too large to standardise"):
        Normalization.fit(series)


def scaled(series: list[Series], factor: float) -> list[Series]:
    return [Series(s.times, s.values * factor, s.id) for s in series]


def test_a_channel_of_tiny_values_trains_as_well_as_the_same_channel_in_larger_units():
    """Values of about 1e-13 (farads) were given std 1: the model learnt nothing, and the
    validation MSE printed as 0.0000 while forecasts were off by 1e9 times the data's spread."""
    train_series, val_series = sine_series(8, 10, seed=0), sine_series(3, 10, seed=1)
    _, metrics = train(tiny_config(epochs=1), train_series, val_series)
    tiny, tiny_metrics = train(tiny_config(epochs=1), scaled(train_series, 1e-13), scaled(val_series, 1e-13))
    observed = np.concatenate([s.values for s in train_series])
    np.testing.assert_allclose(tiny.normalization.std, 1e-13 * np.nanstd(observed, axis=0), rtol=1e-9)
    assert tiny_metrics["val_mse"] == pytest.approx(metrics["val_mse"], rel=1e-3)


def test_a_constant_channel_is_scaled_by_its_magnitude_and_named():
    """0.3 written two ways (0.1 + 0.2 is 0.30000000000000004) is constant, and so is 0; a
    spread of one part in 1e10 is not."""
    times = np.arange(6.0)
    values = np.stack([np.where(times % 2, 0.3, 0.1 + 0.2), np.zeros(6), 1.7e9 + 0.5 * (times % 3)], axis=1)
    series = [Series(times, values)]
    normalization = Normalization.fit(series)
    assert normalization.std[:2] == pytest.approx((0.3, 1.0), rel=1e-12)
    assert normalization.std[2] == pytest.approx(np.std(values[:, 2]))
    assert constant_channels(series) == [0, 1]


@pytest.mark.parametrize(("offset", "factor"), [
    (1e15, 100.0),   # one part in 1e13: was taken for constant, forecasts off by 3e12
    (1e15, 5.0),     # 40 float steps of 0.125 either way
    (0.0, 1e-170),   # its squares underflow to 0: was taken for constant
    (0.0, 1e200),    # its squares overflow: was refused as too large
])
def test_a_channel_that_varies_keeps_its_own_spread_at_any_magnitude(offset, factor):
    series = [Series(s.times, offset + factor * s.values, s.id) for s in sine_series(4, 10, seed=0)]
    observed = np.concatenate([s.values for s in sine_series(4, 10, seed=0)])
    normalization = Normalization.fit(series)
    expected = factor * np.nanstd(observed, axis=0)  # near 1e15 floats are 0.125 apart: rtol 1e-2
    np.testing.assert_allclose(normalization.std, expected, rtol=1e-2)
    assert constant_channels(series) == []


def test_the_command_line_does_not_overwrite_a_trained_model(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        training_main(["latent-ode", "--out", str(out), "--epochs", "1"])
    assert exit_.value.code == 2 and "already holds a trained model: --resume" in capsys.readouterr().err
    assert (out / "config.json").read_text() == "{}"


def test_data_spirals_beside_a_file_named_spirals_asks_which(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spirals").write_text("series_id,time,x\ns,0,1\n")
    with pytest.raises(SystemExit):
        training_main(["latent-ode", "--data", "spirals", "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert "pass ./spirals to train on the file" in capsys.readouterr().err


def test_a_resume_keeps_the_kept_weights_metrics_when_the_state_lags(tmp_path, monkeypatch):
    """A Ctrl-C between an epoch's checkpoint and its training state left the checkpoint an epoch
    ahead; --resume then ended the run with epoch 2's weights labelled with epoch 1's metrics."""
    data = sine_series(8, 10, seed=0), sine_series(3, 10, seed=1)
    out = tmp_path / "run"

    def save_once(path, model, optimizer, config, epoch, *args):
        if epoch > 1:
            raise KeyboardInterrupt
        save_train_state(path, model, optimizer, config, epoch, *args)

    with monkeypatch.context() as patch:
        patch.setattr("training.latent_ode.save_train_state", save_once)
        patch.setattr("training.latent_ode.score", lambda metrics: -metrics["epoch"])  # each epoch better
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(epochs=2), *data, out=out)
    _, ahead = load_checkpoint(out, kind="latent_ode")
    assert json.loads((out / CONFIG_FILE).read_text())["metrics"]["epoch"] == 2
    with monkeypatch.context() as patch:
        patch.setattr("training.latent_ode.score", lambda metrics: -metrics["epoch"])  # each epoch better
        train(tiny_config(epochs=1), *data, out=out, resume=True)  # no epoch left: the run's end
    _, kept = load_checkpoint(out, kind="latent_ode")
    assert Forecaster.load(out).metrics["epoch"] == 2
    for name, tensor in ahead.items():
        torch.testing.assert_close(kept[name], tensor, rtol=0, atol=0)


def test_ctrl_c_says_whether_there_is_anything_to_resume(tmp_path, monkeypatch, capsys):
    """Before the first epoch's save it said '--resume continues', and --resume then found nothing."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("training.latent_ode.run", interrupted)
    out = tmp_path / "run"
    (tmp_path / "run.train_state").mkdir()  # left by another run: no checkpoint beside it
    for saved, words in ((False, "nothing was saved: run it again without --resume"),
                         (True, "--resume continues from the last epoch saved")):
        if saved:
            out.mkdir()
            (out / CONFIG_FILE).write_text("{}")
        with pytest.raises(SystemExit) as exit_:
            training_main(["latent-ode", "--out", str(out)])
        assert exit_.value.code == 130 and words in capsys.readouterr().err


@pytest.mark.parametrize(("settings", "backcast"), [
    (dict(), 0.5), (dict(min_context_fraction=0.8), 0.2), (dict(backcast_fraction=0.0), 0.0),
    (dict(min_context_fraction=1.0), 0.0),        # an encoder that reads every point: nothing before it
])
def test_the_checkpoint_says_how_far_the_model_answers(settings, backcast):
    train_series = sine_series(8, 10, seed=0)
    forecaster, _ = train(tiny_config(epochs=1, **settings), train_series, sine_series(3, 10, seed=1))
    longest = max(s.times[-1] - s.times[0] for s in train_series)
    assert forecaster.max_span == longest
    assert forecaster.max_backcast == pytest.approx(backcast * longest)
    assert forecaster.unseen_channels is False
    assert ("val_backcast_mse" in forecaster.metrics) == (backcast > 0)


def test_a_model_trained_with_hidden_channels_answers_series_without_one():
    forecaster, _ = train(tiny_config(epochs=1, hide_channel_fraction=0.3), sine_series(8, 10, seed=0),
                          sine_series(3, 10, seed=1))
    assert forecaster.unseen_channels is True
    s = sine_series(1, 10, seed=2)[0]
    values = s.values.copy()
    values[:, 0] = np.nan
    kept = ~np.isnan(values).all(axis=1)
    query = ForecastQuery(s.times[kept], values[kept], np.array([s.times[kept][-1] + 0.5]))
    assert np.isfinite(forecaster.predict([query]).forecasts[0].mean).all()


def test_validation_series_longer_than_any_training_series_are_measured_and_drawn(tmp_path):
    """The server reads windows of at most the longest training series; validation (and the
    plot) ask with the recent part of a longer series, as a client is told to, instead of
    failing at the end of training."""
    short = [Series(s.times[:4], s.values[:4], s.id) for s in sine_series(10, 12, seed=0)]
    long = [Series(s.times * 5, s.values, s.id) for s in sine_series(4, 12, seed=1)]  # spans up to 30
    longest = max(s.times[-1] - s.times[0] for s in short)
    assert min(s.times[-1] - s.times[0] for s in long) > longest
    forecaster, metrics = train(tiny_config(epochs=1, plot_series=2), short, long, out=tmp_path / "run")
    assert forecaster.max_span == longest
    assert np.isfinite(metrics["val_extrap_mse"]) and metrics["val_mse"] is not None
    assert (tmp_path / "run" / "forecasts.png").stat().st_size > 0


def test_validation_that_measures_nothing_is_refused_before_training():
    """Each validation series observes its second channel only at its end, which the model is
    never given: nothing could be measured, and the first epoch would have been kept silently."""
    late = []
    for s in sine_series(4, 12, seed=1):
        values = s.values.copy()
        values[:-2, 1] = np.nan
        values[:, 0] = np.where(np.isnan(values[:, 0]) & np.isnan(values[:, 1]), 0.0, values[:, 0])
        late.append(Series(s.times, values, s.id))
    with pytest.raises(ValueError, match="none of the 4 validation series can be measured"):
        train(tiny_config(epochs=1), sine_series(10, 12, seed=0), late)


def test_a_run_saved_before_the_backcast_settings_resumes(tmp_path):
    data = sine_series(10, 10, seed=0), sine_series(3, 10, seed=1)
    forward_only = dict(backcast_fraction=0.0, hide_channel_fraction=0.0)
    train(tiny_config(epochs=1, **forward_only), *data, out=tmp_path / "run")
    state = train_state_path(tmp_path / "run") / CONFIG_FILE
    saved = json.loads(state.read_text())
    for key in forward_only:
        del saved["training"][key]
    state.write_text(json.dumps(saved))
    _, metrics = train(tiny_config(epochs=2, **forward_only), *data, out=tmp_path / "run", resume=True)
    assert metrics["epoch"] >= 1
    with pytest.raises(CheckpointError, match=r"changed: backcast_fraction \(0.0 -> 0.25\)"):
        train(tiny_config(epochs=3, hide_channel_fraction=0.0), *data, out=tmp_path / "run", resume=True)


def test_series_left_out_of_the_metrics_are_counted(capsys):
    """Two test series observe their second channel only at their end, which the model is never
    given: the test metrics leave them out, and the run says so."""
    test = sine_series(4, 12, seed=3)
    for s in test[:2]:
        s.values[:-2, 1] = np.nan
        s.values[:, 0] = np.where(np.isnan(s.values).all(axis=1), 0.0, s.values[:, 0])
    train(tiny_config(epochs=1), sine_series(10, 12, seed=0), sine_series(4, 12, seed=1), test_series=test)
    assert "test: 2 of 4 series left out of the metrics" in capsys.readouterr().out
