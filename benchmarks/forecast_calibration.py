"""Are the forecasts' intervals calibrated? Coverage of held-out noisy observations.

The README promises calibrated uncertainty: a central 90 % interval of a forecast should hold
about 90 % of new observations. This measures it on a model trained on the spirals (the bundled
``models/spirals`` by default), through :meth:`Forecaster.predict`, the call the server makes,
on spirals the model has never seen: drawn by the spirals' own generator with the checkpoint's
count, window and noise but another seed. Each spiral is observed through its window and the
steps after it (200 noisy points, as the trainer's validation spirals are) and asked three ways:

- **interpolation and extrapolation**, the validation protocol of the trainer
  (:func:`training.holdout.holdout_split`): the last half of the points are the future to
  extrapolate, and a fifth of the first half's interior points are held out to interpolate;
- **backcast**, its mirror: the last half of the points are given and the first half is asked;
- for a model that answers series that never observe a channel (``unseen_channels``, trained
  with ``--hide-channel-fraction``), the first query again with one channel (x or y, in turn)
  never observed: its values are counted as the **unseen channel**, the other channel's as
  **other channel, one unseen**.

Every target is a noisy observation, so an interval should hold it at its nominal level (the
forecast's ``std`` includes the observation noise). Each requested time is counted under the
``kind`` the forecaster gives it, but for the query with an unseen channel. For each kind and
central level (50, 80, 90, 95 and 98 %) the report gives the share of targets inside the
interval, with a 95 % bootstrap interval over spirals (the points of one spiral are not
independent draws); the share below each quantile (above 1/2 of them below the median means the
forecasts run high); the mean squared z-score ((y - mean) / std)^2, near 1 for a calibrated
Gaussian; and the 90 % coverage by distance from the given points, in fractions of their span.

    python -m benchmarks.forecast_calibration [--model-dir models/spirals] [--spirals 1000]
        [--seed 2026] [--num-samples 64] [--out FILE]

Prints a table and writes benchmarks/results/forecast_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from service.model.forecaster import Forecaster, ForecastQuery
from service.model.series import Series
from training.data.spirals import generate_spirals, through_future
from training.holdout import holdout_split

ROOT = Path(__file__).resolve().parents[1]
CENTRAL_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.98)
UNSEEN_CHANNEL = "unseen channel"                  # a channel the query never observes
OTHER_CHANNEL = "other channel, one unseen"        # the observed channel of such a query
KINDS = ("backcast", "interpolation", "extrapolation", UNSEEN_CHANNEL, OTHER_CHANNEL)
DISTANCE_BINS = (0.0, 0.25, 0.5, 0.75, 1.0, np.inf)  # distance from the given points / their span
BATCH = 32
BOOTSTRAP_RESAMPLES = 1000


def quantile_levels(central: tuple[float, ...]) -> list[float]:
    """The lower and upper quantile of each central interval, the median too, sorted."""
    return sorted({round((1 - c) / 2, 6) for c in central} | {round((1 + c) / 2, 6) for c in central} | {0.5})


def queries(spiral: Series, hidden: int, rng: np.random.Generator,
            forecaster: Forecaster) -> list[tuple[ForecastQuery, np.ndarray, np.ndarray | None]]:
    """The queries of one whole spiral, each with the noisy values it must predict and, where they
    are not the forecast's own ``kind``, the names the values are counted under: interpolation and
    extrapolation; the backcast; and, for a model that answers it, the first with channel
    ``hidden`` never observed. The times the model does not answer are left out (all of the
    backcasts, for a model not trained to)."""
    held = holdout_split(spiral, extrap_fraction=0.5, interp_fraction=0.2, rng=rng)
    half = spiral.times.size // 2
    at = np.concatenate([held.interp_times, held.extrap_times])
    truth = np.concatenate([held.interp_values, held.extrap_values])
    unseen = held.context.values.copy()
    unseen[:, hidden] = np.nan
    names = np.where(np.arange(truth.shape[1]) == hidden, UNSEEN_CHANNEL, OTHER_CHANNEL)
    asked = [(held.context.times, held.context.values, at, truth, None),
             (spiral.times[half:], spiral.values[half:], spiral.times[:half], spiral.values[:half], None)]
    if forecaster.unseen_channels:
        asked.append((held.context.times, unseen, at, truth, np.broadcast_to(names, truth.shape)))
    kept = []
    for times, values, at, truth, named in asked:
        reachable = np.ones(at.size, dtype=bool)
        reachable[forecaster.out_of_reach(times, at)[1]] = False
        kept.append((ForecastQuery(times, values, at[reachable]), truth[reachable],
                     None if named is None else named[reachable]))
    return kept


def distance_fraction(query: ForecastQuery) -> np.ndarray:
    """How far each requested time lies from the nearest given time, in fractions of their span."""
    nearest = np.abs(query.at[:, None] - query.times[None, :]).min(axis=1)
    return nearest / (query.times[-1] - query.times[0])


def bootstrap_interval(inside: np.ndarray, count: np.ndarray, rng: np.random.Generator) -> list[float]:
    """95 % interval of the pooled share ``inside.sum() / count.sum()`` over resampled spirals."""
    picks = rng.integers(0, inside.size, size=(BOOTSTRAP_RESAMPLES, inside.size))
    shares = inside[picks].sum(axis=1) / np.maximum(count[picks].sum(axis=1), 1)
    return [float(np.quantile(shares, 0.025)), float(np.quantile(shares, 0.975))]


def calibrate(forecaster: Forecaster, spirals: list[Series], *, num_samples: int, seed: int) -> dict:
    """The report for ``spirals`` (see the module docstring)."""
    levels = quantile_levels(CENTRAL_LEVELS)
    rng = np.random.default_rng(seed)
    asked = [(index, *question) for index, spiral in enumerate(spirals)
             for question in queries(spiral, index % spiral.num_channels, rng, forecaster)]
    # Per requested value (time x channel): which spiral, kind, distance bin, z-score, and for
    # each quantile level whether the target lies below it.
    spiral_of, kind_of, bin_of, z_of, below_of = [], [], [], [], []
    for start in range(0, len(asked), BATCH):
        chunk = asked[start:start + BATCH]
        prediction = forecaster.predict([question[1] for question in chunk], quantiles=levels,
                                        num_samples=num_samples, seed=seed)
        for (index, query, truth, named), forecast in zip(chunk, prediction.forecasts, strict=True):
            observed = ~np.isnan(truth)
            rows = np.nonzero(observed)[0]
            spiral_of.append(np.full(rows.size, index))
            kinds = np.broadcast_to(np.array(forecast.kind)[:, None], truth.shape) if named is None else named
            kind_of.append(kinds[observed])
            bin_of.append(np.digitize(distance_fraction(query), DISTANCE_BINS[1:-1])[rows])
            z_of.append(((truth - forecast.mean) / forecast.std)[observed])
            below_of.append(np.stack([(truth < forecast.quantiles[q])[observed] for q in levels], axis=1))
    spiral_of, kind_of, bin_of = (np.concatenate(a) for a in (spiral_of, kind_of, bin_of))
    z, below = np.concatenate(z_of), np.concatenate(below_of)
    column = {q: j for j, q in enumerate(levels)}

    def inside(central: float) -> np.ndarray:
        low, high = column[round((1 - central) / 2, 6)], column[round((1 + central) / 2, 6)]
        return ~below[:, low] & below[:, high]

    def by_spiral(selected: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = np.bincount(spiral_of[selected], minlength=len(spirals))
        return np.bincount(spiral_of[selected], weights=values[selected], minlength=len(spirals)), counts

    boot = np.random.default_rng(seed + 1)
    report = {}
    for kind in KINDS:
        selected = kind_of == kind
        if not selected.any():
            continue
        coverage = {}
        for central in CENTRAL_LEVELS:
            share_inside, counts = by_spiral(selected, inside(central).astype(float))
            coverage[f"{central:g}"] = {"share": float(share_inside.sum() / counts.sum()),
                                        "bootstrap95": bootstrap_interval(share_inside, counts, boot)}
        by_distance = {}
        for b, (low, high) in enumerate(zip(DISTANCE_BINS[:-1], DISTANCE_BINS[1:], strict=True)):
            in_bin = selected & (bin_of == b)
            if in_bin.sum():
                by_distance[f"({low:g}, {high:g}]"] = {"values": int(in_bin.sum()),
                                                       "coverage90": float(inside(0.9)[in_bin].mean())}
        report[kind] = {
            "values": int(selected.sum()),
            "spirals": int(np.unique(spiral_of[selected]).size),
            "coverage": coverage,
            "share_below": {f"{q:g}": float(below[selected, column[q]].mean()) for q in levels},
            "mean_squared_z": float(np.mean(z[selected] ** 2)),
            "coverage90_by_distance": by_distance,
        }
    return report


def print_table(report: dict) -> None:
    print(f"{'kind':<26} values  " + "  ".join(f"{c:>17g}" for c in CENTRAL_LEVELS) + "  mean z^2")
    for kind, r in report.items():
        cells = [f"{c['share']:.3f} [{c['bootstrap95'][0]:.3f},{c['bootstrap95'][1]:.3f}]"
                 for c in r["coverage"].values()]
        print(f"{kind:<26} {r['values']:>6}  " + "  ".join(f"{c:>17}" for c in cells)
              + f"  {r['mean_squared_z']:8.3f}")
    for kind, r in report.items():
        bins = r["coverage90_by_distance"].items()
        print(f"{kind}: 90 % coverage by distance from the given points (fraction of their span): "
              + ", ".join(f"{k} {v['coverage90']:.3f} ({v['values']})" for k, v in bins))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "spirals"),
                        help="a latent-ODE checkpoint trained on the spirals")
    parser.add_argument("--spirals", type=int, default=1000, help="fresh spirals to measure on")
    parser.add_argument("--seed", type=int, default=2026,
                        help="draws the spirals, the held-out points and the forecasts' samples")
    parser.add_argument("--num-samples", type=int, default=64, help="posterior samples per forecast")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "forecast_calibration.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    forecaster = Forecaster.load(args.model_dir)
    training = forecaster.config.get("training", {})
    if training.get("data") != "spirals":
        parser.error(f"{args.model_dir} was not trained on the spirals (data: {training.get('data')!r})")
    if args.seed == training["seed"]:
        parser.error(f"--seed {args.seed} drew the model's own training spirals; choose another")
    spirals = [through_future(s) for s in generate_spirals(args.spirals, training["spirals_observed"],
                                                           training["spirals_noise"], seed=args.seed)]
    report = {
        "command": " ".join(["python -m benchmarks.forecast_calibration",
                             *(argv if argv is not None else sys.argv[1:])]),
        "model": forecaster.name, "version": forecaster.version,
        "spirals": args.spirals, "seed": args.seed, "num_samples": args.num_samples,
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}, "
                   f"Python {platform.python_version()}",
        "kinds": calibrate(forecaster, spirals, num_samples=args.num_samples, seed=args.seed),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report["kinds"])
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
