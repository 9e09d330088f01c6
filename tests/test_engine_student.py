"""The student from weights: ``student.checkpoint`` in every format the teacher loads, ``student.pretrained``
(timm's loader is patched: nothing is downloaded), and the one-line errors both roles share."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import timm.models._builder as timm_builder
from huggingface_hub.errors import LocalEntryNotFoundError
from omegaconf import OmegaConf

from kdbench.config_schema import check_schemas
from kdbench.engine.student import build_student
from kdbench.engine.teacher import teacher_training_config
from kdbench.errors import ConfigError
from kdbench.models import create_model, load_checkpoint

from conftest import FAST, run_cli


def student_cfg(name="resnet8", checkpoint=None, pretrained=False):
    return OmegaConf.create({"student": {"name": name, "checkpoint": checkpoint, "pretrained": pretrained}})


def reference_state(num_classes=10):
    torch.manual_seed(1)
    return create_model("resnet8", num_classes).state_dict()


def one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("layout", ["community", "bare", "module_prefix", "kdbench", "state_dict_entry"])
def test_every_checkpoint_format_loads_bit_identical(tmp_path, layout):
    state = reference_state()
    saved = {
        "community": {"model": state, "epoch": 240, "best_acc": 71.5, "optimizer": {"state": {}, "param_groups": []}},
        "bare": state,
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
        "kdbench": {"kdbench": 1, "model": state, "method": {}, "epoch": 3, "history": [{"epoch": 1, "loss": 2.0}],
                    "run_id": "r", "config": {"seed": 0}, "partial": None},
        "state_dict_entry": {"state_dict": state, "epoch": 10},
    }[layout]
    path = tmp_path / "student.pth"
    torch.save(saved, path)
    model, info = build_student(student_cfg(checkpoint=str(path)), 10, 32)
    assert model.training and all(p.device.type == "cpu" for p in model.parameters())
    loaded = model.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert info == {"name": "resnet8", "resolved": "cifar_resnet8", "params": sum(p.numel() for p in model.parameters()),
                    "init": str(path)}


def test_random_init_info():
    model, info = build_student(student_cfg(), 10, 32)
    assert info["init"] == "random" and info["resolved"] == "cifar_resnet8" and set(info) == {"name", "resolved", "params", "init"}
    assert model.training


def test_missing_unreadable_and_misfit_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError) as e:
        build_student(student_cfg(checkpoint=str(tmp_path / "nope.pth")), 10, 32)
    assert one_line(e).startswith("student.checkpoint: no file at") and "nope.pth" in str(e.value)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint\n\x00\x01")
    with pytest.raises(ConfigError) as e:
        build_student(student_cfg(checkpoint=str(garbage)), 10, 32)
    assert one_line(e).startswith(f"student.checkpoint: cannot read checkpoint {garbage}")

    hundred = tmp_path / "cifar100_resnet8.pth"
    torch.save({"model": reference_state(100)}, hundred)
    for build, key in ((lambda: build_student(student_cfg(checkpoint=str(hundred)), 10, 32), "student.checkpoint"),
                       (lambda: load_checkpoint(create_model("resnet8", 10), hundred), "teacher.checkpoint")):
        with pytest.raises(ConfigError) as e:
            build()
        text = one_line(e)
        assert text.startswith(f"{key}: {hundred} does not fit model cifar_resnet8")
        assert "fc.weight (100, 64) vs (10, 64)" in text and "fc.bias (100,) vs (10,)" in text


OFFLINE_ERRORS = [
    LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub and we cannot find the "
                            "requested files in the local cache."),
    urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
    ConnectionError("Network is unreachable"),
]


@pytest.mark.parametrize("error", OFFLINE_ERRORS, ids=lambda e: type(e).__name__)
def test_offline_pretrained_is_one_line_naming_model_and_local_key(monkeypatch, error):
    def offline(*args, **kwargs):
        raise error

    monkeypatch.setattr(timm_builder, "load_pretrained", offline)
    with pytest.raises(ConfigError) as e:
        build_student(student_cfg(name="resnet10t", pretrained=True), 10, 224)
    text = one_line(e)
    assert text.startswith("student.pretrained: cannot download timm weights for 'resnet10t'")
    assert text.endswith("load a local copy with student.checkpoint=<file>") and type(error).__name__ in text
    with pytest.raises(ConfigError) as e:
        create_model("resnet10t", 10, image_size=224, pretrained=True)  # as provide_teacher calls it
    assert one_line(e).startswith("teacher.pretrained: cannot download timm weights for 'resnet10t'")
    assert str(e.value).endswith("teacher.checkpoint=<file>")


def test_pretrained_student_records_timm_source_and_fresh_head(monkeypatch):
    calls = []
    monkeypatch.setattr(timm_builder, "load_pretrained", lambda model, **kw: calls.append(kw["num_classes"]))
    model, info = build_student(student_cfg(name="resnet10t", pretrained=True), 10, 224)
    assert calls == [10] and model.get_classifier().out_features == 10
    assert info["init"] == "timm:resnet10t" and info["head"] == "re-initialised (10 classes, pretrained 1000)"
    _, info = build_student(student_cfg(name="resnet10t", pretrained=True), 1000, 224)
    assert info["head"] == "pretrained"


def test_checkpoint_wins_over_pretrained(tmp_path, monkeypatch):
    monkeypatch.setattr(timm_builder, "load_pretrained", lambda *a, **k: pytest.fail("pretrained weights fetched"))
    path = tmp_path / "s.pth"
    torch.save(reference_state(), path)
    _, info = build_student(student_cfg(checkpoint=str(path), pretrained=True), 10, 32)
    assert info["init"] == str(path)
    with pytest.raises(ConfigError, match=r"^student.pretrained: none are hosted for CIFAR zoo model 'resnet8'; "
                                          r"pass student.checkpoint=<file>$"):
        build_student(student_cfg(pretrained=True), 10, 32)


def test_student_keys_are_typed_and_the_store_teacher_recipe_stays_valid():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["student=MobileNetV2", "teacher.pretrained=true"])
    assert cfg.student.checkpoint is None and cfg.student.pretrained is False
    check_schemas(cfg)
    tcfg = teacher_training_config(cfg)
    check_schemas(tcfg)
    assert tcfg.student.checkpoint is None and tcfg.student.pretrained is False
    cfg.student.pretrained = "sometimes"
    with pytest.raises(ConfigError, match=r"^student\.pretrained: "):
        check_schemas(cfg)


def test_cli_missing_student_checkpoint_exits_2_one_line_no_run_dir(tmp_path, env):
    out = run_cli(["dataset=synthetic", "student=resnet8", "teacher=resnet8", "student.checkpoint=/nonexistent/s.pth",
                   *FAST], cwd=tmp_path, env=env)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == ["kdbench: error: student.checkpoint: no file at /nonexistent/s.pth"]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
