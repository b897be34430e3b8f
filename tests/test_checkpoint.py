"""Checkpoint directories: round trip, and refusal of tampered or malformed files."""

import json
import math

import pytest
import torch
from torch import nn

from service.model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    build_and_load,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
)


def test_round_trip(tmp_path):
    model = nn.Linear(3, 2)
    digest = save_checkpoint(tmp_path / "ckpt", "toy", model.state_dict(), {"model": {"n_in": 3}})
    config, state = load_checkpoint(tmp_path / "ckpt", kind="toy")
    assert config["weights_sha256"] == digest
    assert config["model"] == {"n_in": 3}
    fresh = nn.Linear(3, 2)
    load_state_strict(fresh, state, "ckpt")
    assert torch.equal(fresh.weight, model.weight)


def test_resave_keeps_extra_files(tmp_path):
    save_checkpoint(tmp_path / "c", "toy", nn.Linear(1, 1).state_dict(), {})
    (tmp_path / "c" / "plot.png").write_bytes(b"png")
    save_checkpoint(tmp_path / "c", "toy", nn.Linear(1, 1).state_dict(), {})
    assert (tmp_path / "c" / "plot.png").read_bytes() == b"png"


def test_tampered_weights_refused(tmp_path):
    save_checkpoint(tmp_path / "c", "toy", nn.Linear(3, 2).state_dict(), {})
    weights = tmp_path / "c" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path / "c")


@pytest.mark.parametrize("mutate", [
    lambda cfg: "not json {",
    lambda cfg: json.dumps([1, 2]),
    lambda cfg: json.dumps({**cfg, "format": "pickle"}),
    lambda cfg: json.dumps({**cfg, "format_version": 99}),
    lambda cfg: json.dumps({k: v for k, v in cfg.items() if k != "weights_sha256"}),
    lambda cfg: "[" * 100_000 + "]" * 100_000,           # was a RecursionError, with no path
    lambda cfg: json.dumps(cfg)[:-1] + ', "big": ' + "1" * 5000 + "}",  # bare ValueError: over 4300 digits
])
def test_malformed_config_refused(tmp_path, mutate):
    save_checkpoint(tmp_path / "c", "toy", nn.Linear(3, 2).state_dict(), {})
    path = tmp_path / "c" / CONFIG_FILE
    path.write_text(mutate(json.loads(path.read_text())))
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'c'}"):
        load_checkpoint(tmp_path / "c")


def test_wrong_kind_and_missing_dir_refused(tmp_path):
    save_checkpoint(tmp_path / "c", "toy", nn.Linear(3, 2).state_dict(), {})
    with pytest.raises(CheckpointError, match="expected 'latent_ode'"):
        load_checkpoint(tmp_path / "c", kind="latent_ode")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path / "nope")


def test_architecture_mismatch_refused(tmp_path):
    save_checkpoint(tmp_path / "c", "toy", nn.Linear(3, 2).state_dict(), {})
    _, state = load_checkpoint(tmp_path / "c")
    with pytest.raises(CheckpointError, match="shape"):
        load_state_strict(nn.Linear(4, 2), state, "c")


@pytest.mark.parametrize(("dtype", "name"), [(torch.float16, "float16"), (torch.float64, "float64"),
                                           (torch.int64, "int64"), (torch.bool, "bool")])
def test_weights_of_another_type_refused(dtype, name):
    """load_state_dict casts silently: such weights of the right shape used to load as ready."""
    state = {key: tensor.to(dtype) for key, tensor in nn.Linear(3, 2).state_dict().items()}
    with pytest.raises(CheckpointError, match=f"c: tensor 'weight' holds {name}, the model needs float32"):
        load_state_strict(nn.Linear(3, 2), state, "c")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weights_refused(bad):
    """They loaded as ready, and every request was then told its dynamics were too stiff."""
    state = nn.Linear(3, 2).state_dict()
    state["bias"][1] = bad
    with pytest.raises(CheckpointError, match="c: tensor 'bias' holds NaN or infinite values"):
        load_state_strict(nn.Linear(3, 2), state, "c")


def test_architecture_is_compared_with_the_weights_before_it_is_built():
    devices = []

    def huge():
        devices.append(torch.empty(0).device.type)
        return nn.Linear(10**6, 10**6)                                 # 4 TB of float32

    with pytest.raises(CheckpointError, match=r"c: tensor 'weight' has shape \(2, 3\), the architecture"):
        build_and_load(huge, nn.Linear(3, 2).state_dict(), "c")
    assert devices == ["meta"]
    weights = nn.Linear(3, 2).state_dict()
    built = build_and_load(lambda: nn.Linear(3, 2), weights, "c")
    assert built.weight.device.type == "cpu" and torch.equal(built.weight, weights["weight"])


def test_checkpoint_is_readable_by_other_users(tmp_path):
    save_checkpoint(tmp_path / "c", "toy", nn.Linear(1, 1).state_dict(), {})
    assert (tmp_path / "c").stat().st_mode & 0o555 == 0o555
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert (tmp_path / "c" / name).stat().st_mode & 0o444 == 0o444
