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


# --- student.init_from_teacher: dinopl's student initialisations -------------------------------------------------
# safelix/dinopl at cd39e7801397d0d11004205e3847f67e660b93d4, configuration.py ``init_student_teacher`` run on a
# module whose reset_parameters() fills w = 0.5 arange(6) + 1, b = (0.1, -0.2, 0.3) on its first call (the teacher)
# and w = -0.3 arange(6) + 0.25, b = -2 (0.1, -0.2, 0.3) on its second (the student's random draw): the student's
# w and b (its buffer stays the fresh copy's 7.0).
THETA_T = (torch.arange(6, dtype=torch.float32) * 0.5 + 1.0, torch.tensor([0.1, -0.2, 0.3]))
THETA_R = (torch.arange(6, dtype=torch.float32) * -0.3 + 0.25, torch.tensor([0.1, -0.2, 0.3]) * -2.0)
DINOPL_INIT = {
    ("neighborhood", 0.3): ([1.0750000476837158, 1.4850000143051147, 1.8949999809265137, 2.305000066757202,
                             2.7149999141693115, 3.125], [0.03999999910593033, -0.07999999821186066, 0.12000000476837158]),
    ("neighborhood_vp", 0.3): ([1.029663324356079, 1.4223719835281372, 1.8150807619094849, 2.207789659500122,
                                2.6004981994628906, 2.9932069778442383],
                               [0.03831304982304573, -0.07662609964609146, 0.11493916064500809]),
    ("interpolated", 0.25): ([0.8125, 1.1124999523162842, 1.412500023841858, 1.712499976158142, 2.012500047683716,
                              2.3125], [0.02500000223517418, -0.05000000447034836, 0.07500000298023224]),
    ("interpolated_vp", 0.25): ([1.027740240097046, 1.4072134494781494, 1.786686897277832, 2.1661601066589355,
                                 2.545633554458618, 2.9251067638397217],
                                [0.03162277862429619, -0.06324555724859238, 0.09486833214759827]),
}


@pytest.mark.parametrize("how,scale", sorted(DINOPL_INIT))
def test_mix_from_teacher_equals_dinopl(how, scale):
    from kdbench.engine.student import mix_from_teacher

    for theta_t, theta_r, expected in zip(THETA_T, THETA_R, DINOPL_INIT[(how, scale)]):
        assert mix_from_teacher(theta_t, theta_r, how, scale).tolist() == pytest.approx(expected, abs=1e-7)
    assert torch.equal(mix_from_teacher(THETA_T[0], THETA_R[0], "equal"), THETA_T[0])


def init_pair(how, scale=0.0, seed=0, teacher_seed=0, **student):
    """A random resnet8 teacher (seeded by ``teacher_seed``) and a student built under the run's ``seed``,
    initialised from it; the student's BN statistics are marked so a copy is visible."""
    from kdbench.engine.student import initialise_from_teacher

    torch.manual_seed(teacher_seed)
    teacher = create_model("resnet8", 10).eval().requires_grad_(False)
    teacher.bn1.running_mean.fill_(0.5)
    torch.manual_seed(seed)
    model, _ = build_student(student_cfg(), 10, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = OmegaConf.create({"name": "resnet8", "init_from_teacher": how, "init_scale": scale, **student})
    return model, teacher, before, initialise_from_teacher(model, teacher, cfg)


def test_equal_copies_parameters_and_buffers():
    model, teacher, _, recorded = init_pair("equal")
    assert recorded == "teacher (equal)"
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("how,scale", [("neighborhood", 0.1), ("neighborhood_vp", 0.5), ("interpolated", 0.3),
                                       ("interpolated_vp", 0.7)])
def test_neighborhood_and_interpolated_mix_every_parameter_and_keep_the_own_buffers(how, scale):
    from kdbench.engine.student import draw_seed, fresh_draw, mix_from_teacher

    model, teacher, before, recorded = init_pair(how, scale)
    assert recorded == f"teacher ({how}, scale {scale:g})"
    drawn = dict(fresh_draw(model, draw_seed(teacher) + 1).named_parameters())
    t_params = dict(teacher.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, mix_from_teacher(t_params[name], drawn[name], how, scale)), name
    for name, b in model.named_buffers():  # BN statistics: the student's own fresh ones, not the teacher's
        assert torch.equal(b, before[name]), name
    assert not torch.equal(model.bn1.running_mean, teacher.bn1.running_mean)


def test_the_random_part_is_a_function_of_the_teacher_never_the_teachers_own_draw():
    """Run seed equal to teacher.seed builds a student identical to the teacher; the random part still differs."""
    from kdbench.engine.student import draw_seed, fresh_draw

    a, teacher, before, _ = init_pair("neighborhood", 1.0, seed=0, teacher_seed=0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items() if "running_mean" not in k)
    b, *_ = init_pair("neighborhood", 1.0, seed=5, teacher_seed=0)  # another run seed, the same teacher
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    drawn = fresh_draw(a, draw_seed(teacher) + 1)
    assert not torch.equal(drawn.conv1.weight, teacher.conv1.weight)
    c, *_ = init_pair("neighborhood", 1.0, teacher_seed=1)  # another teacher, another draw
    assert not torch.equal(c.conv1.weight, a.conv1.weight)


@pytest.mark.parametrize("how,scale,line", [
    ("copy", 0.0, "student.init_from_teacher: unknown value 'copy'; valid: equal, neighborhood, neighborhood_vp, "
                  "interpolated, interpolated_vp, null"),
    ("interpolated", 1.5, "student.init_scale: interpolated takes an alpha in [0, 1], got 1.5"),
    ("neighborhood_vp", -0.1, "student.init_scale: neighborhood_vp takes an eps >= 0, got -0.1"),
])
def test_bad_initialisations_are_one_line(how, scale, line):
    with pytest.raises(ConfigError) as e:
        init_pair(how, scale)
    assert one_line(e) == line


def test_a_student_from_weights_cannot_also_start_from_the_teacher(tmp_path):
    with pytest.raises(ConfigError) as e:
        init_pair("equal", pretrained=True)
    assert one_line(e).startswith("student.init_from_teacher: the student starts from the teacher, not from weights")


def test_init_scale_is_a_typed_student_key():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["student=resnet18", "student.init_scale=0.25"])
    assert cfg.student.init_scale == 0.25 and cfg.student.init_from_teacher is None
    check_schemas(cfg)
    cfg.student.init_scale = "small"
    with pytest.raises(ConfigError, match=r"^student\.init_scale: "):
        check_schemas(cfg)
