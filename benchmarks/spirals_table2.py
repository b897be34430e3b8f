"""Chen et al. 2018, Table 2 on our code: latent ODE vs a GRU baseline on irregular spirals.

Protocol (the data are :mod:`training.data.spirals`; its docstring gives the reasons):

- 1,000 bi-directional 2-D spirals (500 cw, 500 ccw), each a window of 100 equally spaced steps
  of Chen's curves (a=0, b=0.3, 500 grid points on [0, 6*pi]), observed at n in {30, 50, 100}
  steps drawn per spiral without replacement, with Gaussian noise of std 0.3.
- Split by spiral: 700 train, 100 validation, 200 test (seed 0); one data set per n.
- Models: our latent ODE as the trainer builds it by default, at Chen et al.'s sizes (RNN
  encoder of 25 units, latent dimension 4, dynamics and decoder one hidden layer of 20); the
  GRU baseline has 25 units (the paper's RNN size).
- Both get the same budget and rules, from one :class:`training.latent_ode.TrainConfig` with
  the trainer's defaults and 100 epochs: the same training series and normalisation,
  minibatches of 50 (1400 steps), Adam at lr 1e-2 decayed by 0.999 per step, gradient
  clipping at 10, the same augmentations (each step crops each series to a random window of
  >= 25 % of its points, thins it to a random >= 30 % of those, and reads a random first
  >= 50 % of the rest while being scored on all of it; the GRU predicts the unread part
  free-running), and the epoch kept is the one best on the same validation holdouts (the
  latent-ODE trainer's ``val_mse``; the GRU's extrapolation MSE, as it cannot interpolate).
- Score: RMSE, in the spirals' own units, over both coordinates of the 100 grid steps after
  each test spiral's window, against the **clean** trajectory (no noise on the targets). The
  latent ODE's point forecast is its posterior predictive mean (``num_samples`` draws of z0);
  the GRU's is its free-running rollout. It is also split by whether a spiral's future stays
  on the stretch of its curve that training windows cover (see
  :func:`future_inside_training_span`).

``python -m benchmarks.spirals_table2`` writes ``benchmarks/results/spirals_table2.json`` and
prints the table for benchmarks/README.md; ``--quick`` is a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.rnn_baseline import train_gru
from service.model.forecaster import ForecastQuery
from service.model.series import Series
from training.data.spirals import generate_spirals
from training.data.splits import split_by_series
from training.latent_ode import TrainConfig, train

PAPER = {"rnn": {30: 0.3937, 50: 0.3202, 100: 0.1813},
         "latent_ode": {30: 0.1642, 50: 0.1502, 100: 0.1346}}
RESULTS = Path(__file__).resolve().parent / "results" / "spirals_table2.json"


@dataclasses.dataclass
class BenchmarkConfig:
    observed: tuple[int, ...] = (30, 50, 100)
    num_spirals: int = 1000
    noise_std: float = 0.3
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    num_samples: int = 64          # z0 draws for the latent ODE's predictive mean
    trainer: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=100, plot_series=0))


QUICK = BenchmarkConfig(observed=(30, 100), num_spirals=40, num_samples=4,
                        trainer=TrainConfig(epochs=2, batch_size=16, plot_series=0, val_samples=2))


def future_inside_training_span(spiral: Series) -> bool:
    """Whether the spiral's future stays on the part of its curve that training windows cover.

    Windows start at grid steps 0..ntotal-200, so they reach step ntotal-101 at the latest; the
    future of a window starting after step ntotal-300 runs past it, onto a stretch of the curve
    (for cw spirals, the fast outward sweep to radius 15) that no training series shows.
    """
    future, clean = spiral.extra["future_times"], spiral.extra["clean_times"]
    step = future[1] - future[0]
    last_future_step = round((future[-1] - clean[0]) / step)
    return last_future_step <= clean.size - future.size - 1


def rmse_report(predicted: list[np.ndarray], test_set: list[Series]) -> dict:
    """RMSE against the clean future: overall, and split by :func:`future_inside_training_span`."""
    truth = [s.extra["future_values"] for s in test_set]
    squared = (np.stack(predicted) - np.stack(truth)) ** 2
    inside = np.array([future_inside_training_span(s) for s in test_set])
    report = {"rmse": float(np.sqrt(squared.mean()))}
    for name, chosen in (("inside", inside), ("beyond", ~inside)):
        part = float(np.sqrt(squared[chosen].mean())) if chosen.any() else None
        report[f"rmse_future_{name}_training_span"] = part
        report[f"num_future_{name}_training_span"] = int(chosen.sum())
    return report


def run_one(num_observed: int, config: BenchmarkConfig) -> dict:
    """Train both models on spirals observed at ``num_observed`` points; test RMSE of each."""
    spirals = generate_spirals(config.num_spirals, num_observed, config.noise_std, seed=config.seed)
    train_set, val_set, test_set = split_by_series(spirals, config.val_fraction, config.test_fraction,
                                                   config.seed)
    futures = [s.extra["future_times"] for s in test_set]
    trainer = config.trainer

    started = time.perf_counter()
    latent_ode, latent_metrics = train(trainer, train_set, val_set, channels=["x", "y"], source="spirals")
    queries = [ForecastQuery(s.times, s.values, f) for s, f in zip(test_set, futures, strict=True)]
    forecasts = latent_ode.predict(queries, num_samples=config.num_samples, seed=config.seed).forecasts
    latent_seconds = time.perf_counter() - started

    started = time.perf_counter()
    gru, gru_metrics = train_gru(trainer, train_set, val_set)
    gru_predicted = gru.extrapolate(test_set, futures)
    gru_seconds = time.perf_counter() - started

    return {
        "num_observed": num_observed,
        "num_train": len(train_set), "num_val": len(val_set), "num_test": len(test_set),
        "latent_ode": {**rmse_report([f.mean for f in forecasts], test_set), "wall_s": latent_seconds,
                       "selected_epoch": latent_metrics["epoch"], "steps": latent_metrics["step"]},
        "rnn": {**rmse_report(gru_predicted, test_set), "wall_s": gru_seconds,
                "selected_epoch": gru_metrics["epoch"], "steps": gru_metrics["step"]},
    }


def table(results: list[dict]) -> str:
    """Markdown: paper and ours, per number of observed points, then ours split by future span."""
    columns = [r["num_observed"] for r in results]
    lines = ["| model | " + " | ".join(f"{n}/100" for n in columns) + " |",
             "|---|" + "---|" * len(columns)]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def ours(key: str, field: str) -> list[str]:
        return [f"{r[key][field]:.4f}" if r[key][field] is not None else "-" for r in results]

    for key, name in (("rnn", "RNN"), ("latent_ode", "Latent ODE")):
        row(f"{name} (paper)", [f"{PAPER[key][n]:.4f}" if n in PAPER[key] else "-" for n in columns])
        row(f"{name} (ours)", ours(key, "rmse"))
    row("RNN / latent ODE (paper)", [f"{PAPER['rnn'][n] / PAPER['latent_ode'][n]:.2f}"
                                     if n in PAPER["rnn"] else "-" for n in columns])
    row("RNN / latent ODE (ours)", [f"{r['rnn']['rmse'] / r['latent_ode']['rmse']:.2f}" for r in results])
    for span in ("inside", "beyond"):
        counts = {r["latent_ode"][f"num_future_{span}_training_span"] for r in results}
        for key, name in (("rnn", "RNN"), ("latent_ode", "Latent ODE")):
            row(f"{name} (ours), future {span} training span ({'/'.join(map(str, sorted(counts)))} spirals)",
                ours(key, f"rmse_future_{span}_training_span"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spirals_table2",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 2 epochs")
    parser.add_argument("--epochs", type=int, help="override the training epochs")
    parser.add_argument("--observed", type=int, nargs="+", help="override the numbers of observed points")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file (default: {RESULTS})")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    config = QUICK if args.quick else BenchmarkConfig()
    if args.epochs is not None:
        config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, epochs=args.epochs))
    if args.observed is not None:
        config = dataclasses.replace(config, observed=tuple(args.observed))
    torch.set_num_threads(1)
    started = time.perf_counter()
    results = []
    for n in config.observed:
        results.append(run_one(n, config))
        r = results[-1]
        print(f"n={n}: latent ODE RMSE {r['latent_ode']['rmse']:.4f} ({r['latent_ode']['wall_s']:.0f} s), "
              f"RNN RMSE {r['rnn']['rmse']:.4f} ({r['rnn']['wall_s']:.0f} s)", flush=True)
    report = {
        "benchmark": "Chen et al. 2018 Table 2 (spiral extrapolation RMSE vs the clean trajectory)",
        "command": " ".join(["python -m benchmarks.spirals_table2", *argv]),
        "config": dataclasses.asdict(config),
        "paper": PAPER,
        "results": results,
        "wall_s": time.perf_counter() - started,
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}, "
                   f"1 torch thread",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"total wall time {report['wall_s']:.0f} s; results in {args.out}")
    return report


if __name__ == "__main__":
    main()
