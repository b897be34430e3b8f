"""The trainer's command line under torchrun with 2 CPU processes (gloo), on a tiny CSV file."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from latent_fixtures import sine_series

from service.model.checkpoint import load_checkpoint, train_state_path
from service.model.forecaster import Forecaster
from training.latent_ode import PLOT_FILE
from training.train_state import KIND as STATE_KIND

REPO = Path(__file__).resolve().parents[1]
TINY = ["--latent-dim", "3", "--encoder-hidden", "8", "--dynamics-hidden", "8", "--decoder-hidden", "8",
        "--method", "rk4", "--batch-size", "4", "--val-samples", "4", "--plot-series", "1",
        "--val-fraction", "0.2", "--test-fraction", "0.1", "--device", "cpu"]


def write_csv(path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["series_id", "time", "a", "b"])
        for s in sine_series(20, 10, seed=0):
            for t, row in zip(s.times, s.values, strict=True):
                writer.writerow([s.id, repr(float(t)), *("" if np.isnan(v) else repr(float(v)) for v in row)])


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    data = tmp_path / "tiny.csv"
    write_csv(data)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "training", "latent-ode", "--data", str(data), "--epochs", "2", "--out", str(out), *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("epoch 2:") == 1          # only rank 0 reports
    forecaster = Forecaster.load(out)
    assert forecaster.channels == ["a", "b"] and forecaster.time_unit is None
    assert forecaster.config["data"]["source"] == "csv:tiny.csv"
    assert forecaster.metrics["epoch"] in (1, 2)
    assert (out / PLOT_FILE).is_file()
    saved, _ = load_checkpoint(train_state_path(out), kind=STATE_KIND)
    assert saved["epoch"] == 2
