"""Start-up pieces: the registry, settings from the environment, CPU quota, the CLI."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
from pydantic import ValidationError

from service.api.cpu import available_cpus, cgroup_cpu_limit, configure_torch_threads
from service.api.registry import ModelRegistry
from service.api.settings import BUNDLED_MODELS_DIR, Settings
from service.cli import main


def test_registry_serves_the_good_and_lists_the_broken(models_dir):
    shutil.copytree(models_dir / "tiny", models_dir / ".tiny.old")  # a save's leftover: hidden, skipped
    (models_dir / "notes").mkdir()                                  # no config.json: not a checkpoint
    shutil.copytree(models_dir / "tiny", models_dir / "tiny.train_state")  # a trainer's resume state
    (models_dir / "README").write_text("not a directory")
    (models_dir / "headless").mkdir()                               # weights without their config
    shutil.copy(models_dir / "tiny" / "model.safetensors", models_dir / "headless")
    registry = ModelRegistry.load(models_dir)
    ready = {"digits", "digits-ode", "digits-stiff", "hourly", "stiff", "tiny"}
    assert sorted(registry.names()) == sorted([*ready, "foreign", "garbled", "headless", "tampered"])
    assert {e.name for e in registry if e.ready} == ready
    assert registry.count(ready=True) == 6 and registry.count(ready=False) == 4
    assert registry.get("headless").error == "headless/config.json: missing"
    # Clients see paths relative to the models directory; the server's own layout stays private.
    assert registry.get("tampered").error.startswith("tampered/model.safetensors: SHA-256")
    assert str(models_dir) not in " ".join(entry.error for entry in registry if entry.error)
    tiny = registry.get("tiny")
    assert tiny.kind == "latent_ode" and tiny.model.name == "tiny" and tiny.error is None
    foreign = registry.get("foreign")
    assert foreign.kind == "gpt" and "not one this server serves" in foreign.error
    assert registry.get("garbled").kind is None and registry.get("missing") is None


def test_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ODECAST_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("ODECAST_MAX_SERIES", "7")
    monkeypatch.setenv("ODECAST_API_KEY", "s3cret-key")
    settings = Settings()
    assert settings.models_dir == tmp_path and settings.max_series == 7
    assert settings.api_key.get_secret_value() == "s3cret-key" and "s3cret" not in repr(settings)
    assert settings.limits()["max_series"] == 7 and "max_body_bytes" in settings.limits()


def test_settings_refuse_a_missing_models_dir_and_bad_values(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(models_dir=tmp_path / "nope")
    with pytest.raises(ValidationError):
        Settings(models_dir=tmp_path, max_series=0)
    with pytest.raises(ValidationError, match="log level"):
        Settings(models_dir=tmp_path, log_level="loud")
    assert BUNDLED_MODELS_DIR.name == "models" and (BUNDLED_MODELS_DIR.parent / "service").is_dir()


@pytest.mark.parametrize(("field", "value", "words"), [
    ("host", "", "at least 1 character"),               # uvicorn binds every interface to ''
    ("models_dir", "", "models directory is empty"),    # Path('') is '.': the working directory
    ("api_key", " ", "no client could send it"),        # header values are stripped: 401 for all
    ("api_key", "key ", "no client could send it"),
    ("torch_threads", 100_000, "less than or equal to 1024"),  # libgomp ran out of memory
    ("default_model", "", "at least 1 character"),
])
def test_settings_refuse_values_that_would_start_a_server_wrongly(tmp_path, field, value, words):
    with pytest.raises(ValidationError, match=words):
        Settings(**{"models_dir": tmp_path, field: value})


@pytest.mark.parametrize(("variable", "words"), [
    ("ODECAST_API_KEY", "no client could send it"),   # ${SECRET} unset: it started with no authentication
    ("ODECAST_HOST", "at least 1 character"),
    ("ODECAST_MODELS_DIR", "models directory is empty"),
    ("ODECAST_TORCH_THREADS", "valid integer"),
])
def test_an_empty_variable_is_refused_not_read_as_unset(monkeypatch, variable, words):
    monkeypatch.setenv(variable, "")
    with pytest.raises(ValidationError, match=words):
        Settings()


@pytest.mark.parametrize(("text", "cpus"), [("200000 100000", 2), ("150000 100000", 1), ("50000 100000", 1),
                                            ("max 100000", None), ("garbage", None)])
def test_cgroup_v2_quota_rounds_down(tmp_path, text, cpus):
    (tmp_path / "cpu.max").write_text(text + "\n")
    assert cgroup_cpu_limit(tmp_path / "cpu.max", tmp_path / "no-v1") == cpus


@pytest.mark.parametrize(("quota", "cpus"), [("300000", 3), ("250000", 2), ("-1", None)])
def test_cgroup_v1_quota(tmp_path, quota, cpus):
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text(quota + "\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "no-v2", v1) == cpus


def test_cpu_count_and_torch_threads(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent-v1") is None
    (tmp_path / "cpu.max").write_text("100000 100000")
    assert available_cpus(tmp_path / "cpu.max") == 1
    before = torch.get_num_threads()
    try:
        assert configure_torch_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_torch_threads(None) == available_cpus()
    finally:
        torch.set_num_threads(before)


def test_cli_reports_bad_settings(tmp_path, capsys):
    assert main(["serve", "--models-dir", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "--models-dir", ""]) == 2 and "models directory is empty" in capsys.readouterr().err
    assert main(["serve", "--host", "", "--models-dir", str(tmp_path)]) == 2
    assert "host: String should have at least 1 character" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not run on Windows")
def test_serve_gets_uvicorns_fast_http_parser_and_event_loop():
    """``odecast serve`` leaves uvicorn on http/loop "auto", which takes these when installed."""
    from uvicorn.loops.auto import auto_loop_factory
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert AutoHTTPProtocol is HttpToolsProtocol
    loop = auto_loop_factory()()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
