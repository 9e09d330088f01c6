"""W&B without network or login: ``logger.mode=online`` falls back to offline with one warning line and never
blocks a run. No test reaches a network: W&B is pointed at a closed local port, or its init is replaced."""

from __future__ import annotations

import logging
import time

import pytest
import wandb
from omegaconf import OmegaConf

from kdbench.engine.tracking import Tracker


def logger_cfg(mode="online"):
    return OmegaConf.create({"mode": mode, "project": "kdbench-test", "entity": None, "group": None, "tags": [],
                             "name": None})


class FakeRun:
    def __init__(self, mode):
        self.id, self.dir, self.settings = "fake", "/nowhere/files", type("S", (), {"mode": mode})()

    def define_metric(self, *a, **k):
        pass


@pytest.mark.parametrize("error", [wandb.errors.UsageError("No API key configured. Use `wandb login` to log in."),
                                   wandb.errors.CommError("Timed out while retrying\nConsider increasing ..."),
                                   ConnectionError("Network is unreachable")])
def test_online_init_failure_falls_back_to_offline_with_one_warning(tmp_path, monkeypatch, caplog, error):
    modes = []

    def init(mode, **kwargs):
        modes.append((mode, kwargs["id"], kwargs["settings"].init_timeout))
        if mode == "online":
            raise error
        return FakeRun(mode)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "teardown", lambda: None)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "7")
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        tracker = Tracker(logger_cfg(), tmp_path, {"seed": 0}, run_id="abc123")
    assert modes == [("online", "abc123", 7.0), ("offline", "abc123", 7.0)]  # the same W&B run id, offline
    assert tracker.mode == "offline" and tracker.run_id == "fake"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith(f"logger.mode=online: W&B cannot be reached ({type(error).__name__}: ")
    assert "logging offline instead" in lines[0] and "wandb sync" in lines[0]


def test_offline_and_disabled_never_try_online(tmp_path, monkeypatch):
    modes = []
    monkeypatch.setattr(wandb, "init", lambda mode, **kw: modes.append(mode) or FakeRun(mode))
    Tracker(logger_cfg("offline"), tmp_path, {})
    assert Tracker(logger_cfg("disabled"), tmp_path, {}).mode == "disabled"
    assert modes == ["offline"]


def test_run_with_online_logging_and_no_network_completes_offline(tmp_path, monkeypatch, caplog):
    """The real W&B client, its server a closed port on this machine (nothing leaves it), a dummy key and a
    2-second init timeout: the run trains to the end and its W&B run is written offline."""
    from test_engine_state import compose_cfg

    from kdbench.engine.trainer import train

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        record = train(compose_cfg(tmp_path, "trainer.epochs=1", "logger.mode=online"), tmp_path / "run")
    assert time.perf_counter() - t0 < 60
    assert record["status"] == "completed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("logger.mode=online: W&B cannot be reached"), warnings
    assert "127.0.0.1:9" in warnings[0]  # the failed attempt went to the closed local port, nowhere else
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
