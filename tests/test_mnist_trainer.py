"""The MNIST trainer on a few batches: checkpoint, resumable state, NFE records, torchrun."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from service.model.classifier import Classifier
from tests.mnist_files import write_split
from training import mnist
from training.__main__ import main as training_main
from training.data.mnist_idx import load_split

SAMPLE = Path(__file__).parent / "data" / "mnist-sample"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A 96-image training split and a 48-image test split cut from the committed sample."""
    directory = tmp_path_factory.mktemp("mnist")
    sample = load_split(SAMPLE, "test")
    write_split(directory, "train", sample.images[:96], sample.labels[:96])
    write_split(directory, "test", sample.images[96:144], sample.labels[96:144])
    return directory


def train(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    mnist.add_arguments(parser)
    torch.set_num_threads(1)
    mnist.run(parser.parse_args(argv))


def common(data_dir, out, model="mlp", epochs=2):
    return ["--model", model, "--data-dir", str(data_dir), "--out", str(out), "--epochs", str(epochs),
            "--batch-size", "16", "--test-batch-size", "24", "--limit-train-batches", "2", "--threads", "1"]


def test_writes_loadable_checkpoint_and_resumes(tmp_path, data_dir):
    out = tmp_path / "mlp"
    train(common(data_dir, out))
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "mnist_classifier"
    assert config["architecture"] == {"name": "mlp", "hidden": 300}
    assert config["parameter_count"] == 238_510
    assert config["preset"] == "short" and config["epochs"] in (1, 2)
    assert len(config["data"]["fingerprint"]) == 64
    assert sorted(config["data"]["files"]) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                                               "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    assert 0.0 <= config["metrics"]["test_accuracy"] <= 1.0
    assert [r["epoch"] for r in config["history"]] == list(range(1, config["epochs"] + 1))
    state = out.with_name("mlp.train_state")
    assert sorted(p.name for p in state.iterdir()) == ["state.json", "state.safetensors"]

    classifier = Classifier.load(out)
    probabilities, nfe = classifier.predict(torch.rand(2, 1, 28, 28))
    assert probabilities.shape == (2, 10) and nfe == 0

    with pytest.raises(ValueError, match=r"has already trained 2 epochs; --epochs counts all"):
        train(common(data_dir, out) + ["--resume"])  # exited 0 having done nothing
    train(common(data_dir, out, epochs=3) + ["--resume"])
    progress = json.loads((state / "state.json").read_text())["progress"]
    assert [r["epoch"] for r in progress["history"]] == [1, 2, 3]  # epochs 1-2 not redone


def test_resume_refuses_another_architecture(tmp_path, data_dir):
    out = tmp_path / "mlp"
    train(common(data_dir, out, epochs=1))
    with pytest.raises(ValueError, match="--resume: .* trained"):
        train(common(data_dir, out, model="resnet", epochs=2) + ["--resume"])


def test_resume_without_state(tmp_path, data_dir):
    with pytest.raises(ValueError, match="nothing to resume"):
        train(common(data_dir, tmp_path / "none") + ["--resume"])


def test_the_largest_seed_trains(tmp_path, data_dir):
    train(common(data_dir, tmp_path / "mlp", epochs=1) + ["--seed", str(2**32 - 1)])
    assert (tmp_path / "mlp" / "config.json").is_file()


def test_a_trained_model_is_not_overwritten(tmp_path, data_dir):
    out = tmp_path / "mlp"
    train(common(data_dir, out, epochs=1))
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a trained model"):
        train(common(data_dir, out, epochs=1) + ["--lr", "0.5"])
    assert (out / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(("gradient", "backward_nfe"), [("direct", False), ("checkpointed", True)])
def test_odenet_records_solver_and_nfe(tmp_path, data_dir, gradient, backward_nfe):
    out = tmp_path / "odenet"
    train(common(data_dir, out, model="odenet", epochs=1)
          + ["--limit-train-batches", "1", "--gradient", gradient, "--segments", "2", "--tol", "0.01"])
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"]["gradient"] == gradient and config["architecture"]["tol"] == 0.01
    metrics = config["metrics"]
    assert metrics["nfe_forward"] > 0 and metrics["test_nfe"] > 0
    assert (metrics["nfe_backward"] > 0) == backward_nfe
    assert Classifier.load(out).predict(torch.rand(1, 1, 28, 28))[1] > 0


def test_init_from_copies_weights(tmp_path, data_dir):
    source, target = tmp_path / "rknet", tmp_path / "odenet"
    train(common(data_dir, source, model="rknet", epochs=1) + ["--limit-train-batches", "1"])
    train(common(data_dir, target, model="odenet", epochs=1)
          + ["--limit-train-batches", "1", "--lr", "1e-9", "--tol", "0.01", "--init-from", str(source)])
    config = json.loads((target / "config.json").read_text())
    assert config["initialized_from"]["architecture"]["name"] == "rknet"
    before = Classifier.load(source).model.state_dict()
    after = Classifier.load(target).model.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)


def test_presets_and_flags():
    parser = argparse.ArgumentParser()
    mnist.add_arguments(parser)
    paper = mnist.config_from_args(parser.parse_args(["--preset", "paper"]))
    assert (paper.epochs, paper.schedule, paper.weight_decay, paper.nesterov) == (160, "step", 0.0, False)
    assert mnist.learning_rate(paper, 59 * 10, 10) == pytest.approx(0.1)
    assert mnist.learning_rate(paper, 60 * 10, 10) == pytest.approx(0.01)
    assert mnist.learning_rate(paper, 140 * 10, 10) == pytest.approx(1e-4)
    short = mnist.config_from_args(parser.parse_args(["--epochs", "2", "--lr", "0.05"]))
    assert (short.epochs, short.lr, short.schedule) == (2, 0.05, "onecycle")
    rates = [mnist.learning_rate(short, step, 10) for step in range(20)]
    assert max(rates) == pytest.approx(0.05) and rates[0] < rates[2] and rates[-1] < 0.01


@pytest.mark.parametrize(("args", "words"), [
    (["--batch-size", "-3"], "batch_size must be at least 1, got -3"),  # trained nothing, saved the result
    (["--epochs", "0"], "epochs must be at least 1, got 0"),             # exited 0, saved nothing
    (["--test-batch-size", "0"], "test_batch_size must be at least 1"),  # a torch traceback
    (["--limit-train-batches", "0"], "limit_train_batches must be at least 1"),  # "float division by zero"
    (["--crop-padding", "-2"], "crop_padding must be 0 or more"),
    (["--momentum", "1.5"], "need 0 <= momentum < 1"),
    (["--momentum", "0"], "nesterov needs a momentum above 0"),
    (["--model", "odenet", "--tol", "nan"], "tol must be a finite number above 0, got nan"),
    (["--batch-size", "500"], "batch_size 500 is larger than the 96 training images"),
    (["--threads", "5000"], "--threads"),   # libgomp started 5000 threads on 2 CPUs
    (["--seed", "-1"], "seed must be"),
    (["--seed", str(2**32)], "seed must be"),   # torch's generators keep 32 bits: it repeated seed 0
    (["--out", ""], "--out ''"),               # trained an epoch, then "has an empty name"
])
def test_bad_flags_are_refused_in_one_line_before_training(tmp_path, data_dir, capsys, args, words):
    out = tmp_path / "model"
    with pytest.raises(SystemExit) as exit_:
        training_main(["mnist", *common(data_dir, out, epochs=1), *args])
    message = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in message
    assert message.startswith("python -m training mnist: error: ") and words in message
    assert not out.exists()


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, data_dir):
    """Two CPU ranks under torchrun: both train, only rank 0 writes, accuracy covers all test images."""
    script = tmp_path / "train_mnist.py"
    script.write_text("import sys\nsys.argv[0] = 'mnist'\nfrom tests.test_mnist_trainer import train\n"
                      "train(sys.argv[1:])\n")
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    str(script), *common(data_dir, out, epochs=1)], check=True, env=env, cwd=ROOT,
                   capture_output=True, timeout=300)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["batch_size"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "ddp.train_state", "train_mnist.py"]
    test = load_split(data_dir, "test")
    images = torch.from_numpy(test.images / 255.0).float().unsqueeze(1)
    probabilities, _ = Classifier.load(out).predict(images)
    accuracy = float((probabilities.argmax(axis=1) == test.labels).mean())
    assert config["metrics"]["test_accuracy"] == pytest.approx(accuracy)  # both ranks' shards counted
