"""How much a series' forecast moves with what else the request holds: other series, other times.

The README promises that a series gets the same answer alone as in a batch, and that its answer
at a time does not depend on the other times asked for, to float rounding. This measures both
on a model (the bundled spirals by default), with random spiral-like series as in the tests:

- **batch**: a series forecast alone, then beside a far-reaching series (the case that moved it
  most when the batch was solved as one ODE) and beside other random series; the largest
  absolute difference of mean, std and a 0.9 quantile;
- **other times**: the answer at each of a few times asked alone, against the same time inside
  a longer list of forecast, backcast and repeated times.

    python benchmarks/forecast_invariance.py [--model-dir models/spirals] [--trials 8] [--out FILE]

Prints the largest differences and writes benchmarks/results/forecast_invariance.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.model.forecaster import Forecaster, ForecastQuery  # noqa: E402

QUANTILE = 0.9


def spiral_query(rng: np.random.Generator, at: np.ndarray) -> ForecastQuery:
    times = np.sort(rng.uniform(0, 3, 30))
    radius = rng.uniform(1.0, 3.0)
    values = radius * np.stack([np.cos(times), np.sin(times)], axis=1) + rng.normal(0, 0.1, (30, 2))
    return ForecastQuery(times, values, at)


def largest_gap(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in ((a.mean, b.mean), (a.std, b.std),
                                                       (a.quantiles[QUANTILE], b.quantiles[QUANTILE])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "spirals"))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "forecast_invariance.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = Forecaster.load(args.model_dir)
    rng = np.random.default_rng(0)
    far = ForecastQuery(np.array([0.0, 14.0]), np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([29.0]))
    batch_gaps, time_gaps = [], []
    for trial in range(args.trials):
        target = spiral_query(rng, np.array([-1.0, 0.5, 2.2, 3.0, 5.0]))
        others = [spiral_query(rng, np.linspace(-1.5, 8.0, 20)) for _ in range(trial + 1)]
        ask = dict(quantiles=[QUANTILE], num_samples=32, seed=trial)
        alone = model.predict([target], **ask).forecasts[0]
        for before, after in (([far], []), (others, [far])):
            inside = model.predict([*before, target, *after], **ask).forecasts[len(before)]
            batch_gaps.append(largest_gap(alone, inside))
        many_at = np.array([5.0, 0.5, 3.0, 0.5, 5.0, -1.0, 2.2, 0.0, 7.5, -0.3])
        many = model.predict([ForecastQuery(target.times, target.values, many_at)], **ask).forecasts[0]
        for j in (0, 1, 5, 9):
            one = model.predict([ForecastQuery(target.times, target.values, many_at[j:j + 1])], **ask)
            time_gaps.append(float(np.abs(one.forecasts[0].mean[0] - many.mean[j]).max()))
    result = {"model": model.name, "version": model.version, "trials": args.trials,
              "batch_max_abs_difference": max(batch_gaps), "other_times_max_abs_difference": max(time_gaps),
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}"}
    print(f"alone vs in a batch: largest difference {result['batch_max_abs_difference']:.2e} "
          f"({len(batch_gaps)} comparisons of mean, std and the {QUANTILE} quantile)")
    print(f"one time vs among others: largest difference {result['other_times_max_abs_difference']:.2e} "
          f"({len(time_gaps)} comparisons of the mean)")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
