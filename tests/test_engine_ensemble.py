"""Teacher ensembles (``teacher=ensemble teacher.members=[...]``, kdbench/models/ensemble.py and
kdbench/engine/teacher.py ``provide_ensemble``): combine rules, outputs, the cache key, and a CLI run with two
store teachers whose result lists both."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, compose_config, write_cifar100
from kdbench.engine.build import weights_fingerprint
from kdbench.engine.logit_cache import cache_key
from kdbench.engine.teacher import member_config
from kdbench.errors import ConfigError
from kdbench.models import create_model, run_model, supports
from kdbench.models.ensemble import TeacherEnsemble, combine_logits


def _members(seed=0):
    torch.manual_seed(seed)
    return [create_model("resnet8", 10, image_size=32).eval(), create_model("resnet14", 10, image_size=32).eval()]


def test_combine_rules_by_hand():
    z = torch.tensor([[[1.0, 2.0, 0.0]], [[3.0, -1.0, 0.5]]])  # K=2, B=1, C=3
    assert torch.allclose(combine_logits(z, "logits"), torch.tensor([[2.0, 0.5, 0.25]]))
    p = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in ([1.0, 2.0, 0.0], [3.0, -1.0, 0.5])]
    mean_p = [(a + b) / 2 for a, b in zip(*p)]
    probs = combine_logits(z, "probs")
    assert torch.allclose(probs.exp(), torch.tensor([mean_p]), atol=1e-7)  # log of the mean probability
    assert torch.allclose(probs.softmax(-1), torch.tensor([mean_p]), atol=1e-7)
    with pytest.raises(ValueError, match="valid: logits, probs"):
        combine_logits(z, "max")


def test_outputs_members_and_features_from_one_member():
    members = _members()
    ens = TeacherEnsemble(members, combine="probs", features_from=1)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = run_model(ens, x, {"logits", "embedding", "stages", "member_logits"})
        own = [m(x) for m in members]
        feats = run_model(members[1], x, {"embedding", "stages"})
    assert out.member_logits.shape == (2, 3, 10)
    assert torch.allclose(out.member_logits, torch.stack(own))
    assert torch.allclose(out.logits, combine_logits(torch.stack(own), "probs"), atol=1e-6)
    assert torch.allclose(out.embedding, feats.embedding)
    assert [s.shape for s in out.stages] == [s.shape for s in feats.stages]
    assert torch.allclose(ens(x), out.logits, atol=1e-6)
    assert supports(ens, {"embedding", "stages"}) is None
    assert "pre-activation" in supports(TeacherEnsemble([create_model("resnet18", 10, image_size=224)]), {"preact"})
    single = run_model(members[0], x, {"logits", "member_logits"})
    assert single.member_logits.shape == (1, 3, 10)  # one teacher: K = 1


def test_fingerprint_keys_on_every_member_and_the_combine_rule():
    """The teacher-logit cache keys on ``weights_fingerprint(teacher)``: any member's weights or the rule change it."""
    base = weights_fingerprint(TeacherEnsemble(_members(0)))
    assert weights_fingerprint(TeacherEnsemble(_members(0))) == base
    assert weights_fingerprint(TeacherEnsemble(_members(0), combine="probs")) != base
    for k in range(2):
        changed = _members(0)
        with torch.no_grad():
            next(changed[k].parameters()).add_(1e-3)
        assert weights_fingerprint(TeacherEnsemble(changed)) != base


def _run_cfg(**teacher):
    cfg = OmegaConf.create({"teacher": {"name": "ensemble", "members": [], "combine": "logits", "features_from": 0,
                                        "checkpoint": None, "pretrained": False, "train_if_missing": True,
                                        "train_epochs": 3, "seed": 4, "recipe": {}, "random_init": False, **teacher}})
    return cfg


def test_member_config_takes_the_shipped_teacher_and_the_ensembles_defaults():
    cfg = _run_cfg(members=["resnet8", {"name": "resnet14", "checkpoint": "/w/r14.pth", "seed": 1}])
    first, second = (member_config(cfg, e, i).teacher for i, e in enumerate(cfg.teacher.members))
    assert first.name == "resnet8" and first.seed == 4 and first.train_epochs == 3 and first.checkpoint is None
    assert second.name == "resnet14" and second.checkpoint == "/w/r14.pth" and second.seed == 1
    with pytest.raises(ConfigError, match=r"teacher.members\[0\].colour: not a teacher key"):
        member_config(cfg, {"name": "resnet8", "colour": "red"}, 0)
    with pytest.raises(ConfigError, match=r"teacher.members\[1\]: expected a teacher name"):
        member_config(cfg, 7, 1)


def test_ensemble_run_records_every_member_and_keys_the_cache_on_both(tmp_path, monkeypatch):
    """Two store teachers trained first, then a KD run with the teacher-logit cache on (in-process, through the
    trainer): the result lists both members with their measured accuracy, the cache folder is keyed by the
    ensemble's fingerprint (both members' weights and the rule), and the first member alone is the same store
    teacher with the same accuracy."""
    from kdbench.data import build_data
    from kdbench.engine.teacher import provide_teacher
    from kdbench.engine.trainer import train

    root = write_cifar100(tmp_path / "data", n_train=16, n_test=16)  # the cache holds 16 x 162 views per member
    monkeypatch.setenv("KDBENCH_HOME", str(tmp_path / "store"))
    cfg = compose_config(
            f"dataset.root={root}", *FAST, "trainer.epochs=1", "teacher.train_epochs=1", "logger.mode=disabled",
            "student=resnet8", "method=kd", "trainer.teacher_cache=on", "teacher=ensemble",
            "teacher.members=[resnet8,resnet14]", "teacher.combine=probs")
    record = train(cfg, tmp_path / "ens", teacher_provider=provide_teacher)
    assert record["status"] == "completed"
    teacher = record["teacher"]
    assert teacher["name"] == "ensemble" and teacher["combine"] == "probs"
    assert [m["name"] for m in teacher["members"]] == ["resnet8", "resnet14"]
    assert all(0 <= m["top1"] <= 100 and m["checkpoint"].endswith("teacher.pth") for m in teacher["members"])
    assert 0 <= teacher["top1"] <= 100 and teacher["resolved"] == "ensemble(cifar_resnet8+cifar_resnet14)"
    assert json.loads((tmp_path / "ens" / "result.json").read_text())["teacher"] == teacher

    data = build_data(cfg.dataset)
    ensemble, _ = provide_teacher(cfg, data, torch.device("cpu"), measure=False)  # from the store: nothing trained
    images = torch.from_numpy(data.train.data).permute(0, 3, 1, 2).contiguous()
    targets = torch.as_tensor(data.train.targets)
    key = cache_key(weights_fingerprint(ensemble), images, targets, cfg.dataset.mean, cfg.dataset.std)
    assert Path(teacher["logit_cache"]).name == key
    single, info = provide_teacher(member_config(cfg, "resnet8", 0), data, torch.device("cpu"))
    assert info["checkpoint"] == teacher["members"][0]["checkpoint"] and info["top1"] == teacher["members"][0]["top1"]
    assert cache_key(weights_fingerprint(single), images, targets, cfg.dataset.mean, cfg.dataset.std) != key


@pytest.mark.parametrize("args,expected", [
    (["teacher.members=[]"], "teacher.members: an ensemble needs at least one member"),
    (["teacher.members=[resnet8]", "teacher.combine=max"], "teacher.combine: unknown value 'max'"),
    (["teacher.members=[resnet8]", "teacher.features_from=3"], "teacher.features_from: 3 is not a member index"),
    (["teacher.members=[resnet8,nosuchnet]"], "teacher.members[1].name: unknown model 'nosuchnet'"),
    (["teacher.members=[{name: resnet8, checkpoint: /nonexistent/r8.pth}]"],
     "teacher.members[0].checkpoint: no file at /nonexistent/r8.pth"),
])
def test_bad_ensemble_input_is_one_line_before_any_work(tmp_path, cifar_root, args, expected, monkeypatch, capsys):
    from kdbench.cli import entry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["kdbench", f"dataset.root={cifar_root}", *FAST, "teacher=ensemble", *args,
                                     "trainer.epochs=1", "logger.mode=disabled"])
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "outputs").exists()
