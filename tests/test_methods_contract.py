"""The contract every registered method keeps (kdbench/methods/base.py ``Method``, registry in
kdbench/methods/__init__.py), checked for each name in ``METHODS`` on a same-family and a cross-family pair:
it builds from its shipped config (or refuses the pair as listed below), returns finite scalar named terms,
trains the student and its own parts but never the teacher, round-trips through a checkpoint, and records
exactly its config's hyper-parameters. Reference values live in each method's own test file."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from kdbench.engine.build import size_method
from kdbench.errors import ConfigError
from kdbench.methods import METHODS, Batch, Progress
from kdbench.models import create_model
from method_harness import CONF, make_context, method_from_config, run_step

# Small CIFAR-zoo pairs (10 classes, batch 8, 32 px) keep the whole file fast on a CPU.
SAME_FAMILY = ("resnet14", "resnet8")  # equal stage widths, deeper teacher
CROSS_FAMILY = ("wrn_16_2", "MobileNetV2")  # other widths, other stage count and map sizes
PAIRS = {"same": SAME_FAMILY, "cross": CROSS_FAMILY}

# Pairs a method cannot serve by design, with what its one-line ConfigError must say. A method that starts
# refusing a pair not listed here, or stops refusing one listed, fails the contract.
EXPECTED_REFUSALS = {
    ("kdsvd", "cross"): "equal student and teacher map widths",  # KDSVD compares singular vectors channel-wise
}

# Switches that a method may record only when they are on, so that runs without them keep their earlier record
# (kdbench/methods/kd.py hparams_without_unset_switch: KD and DKD; MLKD records its switch always).
UNRECORDED_WHEN_OFF = {"logit_stand"}

NUM_CLASSES, BATCH, TRAIN_SIZE, IMAGE = 10, 8, 24, 32  # three batches: two steps, then the checked one
EPOCH = 30  # past every warm-up, so no term is weighted to zero


def _config(name: str) -> dict:
    path = CONF / "method" / f"{name}.yaml"
    assert path.is_file(), f"method {name} is registered but has no conf/method/{name}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _pair(name: str, teacher: str, student: str, cache_dir, student_seed: int = 0):
    """The method from its config, sized on a pair. The teacher and the batches are always the same draws; the
    student, the method's parts and, for ``student_seed != 0``, the training set the method is built from (so
    state derived from it, such as ND's class means, differs until a checkpoint is loaded) come from
    ``student_seed``."""
    method = method_from_config(name)
    torch.manual_seed(0)
    t_model = create_model(teacher, NUM_CLASSES, image_size=IMAGE).eval().requires_grad_(False)
    t_model = t_model if method.uses_teacher else None
    images = torch.randn(TRAIN_SIZE, 3, IMAGE, IMAGE)
    targets = torch.arange(TRAIN_SIZE) % NUM_CLASSES
    torch.manual_seed(student_seed)
    s_model = create_model(student, NUM_CLASSES, image_size=IMAGE)
    train_images = images if student_seed == 0 else torch.randn_like(images)
    t_state = {k: v.clone() for k, v in t_model.state_dict().items()} if t_model is not None else None
    context = make_context(t_model, NUM_CLASSES, train_images, targets, cache_dir, student=s_model,
                           validation=(images[:8], targets[:8]))
    size_method(method, s_model, t_model, images[:2], context)
    return method, s_model, t_model, t_state, images, targets


def _step(pair, batch_index: int, seed: int):
    method, s_model, t_model, _, images, targets = pair
    idx = torch.arange(batch_index * BATCH, (batch_index + 1) * BATCH)
    views = {view: images[idx].flip(-1) for view in method.views}
    progress = Progress(epoch=EPOCH, epochs=240, step=(EPOCH - 1) * 3 + batch_index, steps_per_epoch=3)
    torch.manual_seed(seed)
    return run_step(method, s_model, t_model, Batch(images[idx], targets[idx], idx, views), progress)


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, kind, tmp_path):
    teacher, student = PAIRS[kind]
    config = _config(name)
    cls = METHODS[name]
    assert config.get("name") == name and config["_target_"] == f"{cls.__module__}.{cls.__qualname__}", config

    # builds from its shipped config on the pair, or refuses it as listed
    refusal = EXPECTED_REFUSALS.get((name, kind))
    if refusal is not None:
        with pytest.raises(ConfigError) as error:
            _pair(name, teacher, student, tmp_path)
        message = str(error.value)
        assert refusal in message and "\n" not in message, message
        assert f"method={name}" in message or "method." in message, message
        return
    pair = _pair(name, teacher, student, tmp_path)
    method, s_model, t_model, t_state, _, _ = pair

    # hyper-parameters: exactly the config's values, JSON-serialisable
    expected = {k: v for k, v in config.items() if k not in ("_target_", "name")}
    hparams = method.hparams()
    expected = {k: v for k, v in expected.items() if k in hparams or not (k in UNRECORDED_WHEN_OFF and v is False)}
    assert hparams == expected
    assert json.loads(json.dumps(hparams)) == hparams

    # named, finite, scalar terms
    loss, terms = _step(pair, 0, seed=1)
    assert terms, "the method returned no terms"
    for term, value in terms.items():
        assert isinstance(term, str) and torch.is_tensor(value) and value.dim() == 0, (term, value)
        assert torch.isfinite(value), (term, value)
    assert torch.isfinite(loss) and torch.isfinite(sum(terms.values()))

    # gradients: the student and every trainable part of the method, never the teacher
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s_model.parameters()), "no student gradient"
    for pname, p in s_model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"student parameter {pname}: non-finite gradient"
    for pname, p in method.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"method parameter {pname} got no gradient"
            assert p.grad.abs().sum() > 0, f"method parameter {pname} got a zero gradient"
    if t_model is not None:
        for pname, p in t_model.named_parameters():
            assert p.grad is None and not p.requires_grad, f"teacher parameter {pname} was given a gradient"

    # checkpoint round trip: a fresh method and student of the same config, loaded, take the same next step
    # (saved after a second step, so state that only changes from the second step on is covered: TAID's t)
    _step(pair, 1, seed=2)
    path = tmp_path / "ckpt.pt"
    torch.save({"method": method.state_dict(), "model": s_model.state_dict()}, path)
    # other weights, other training set and its own cache folder: loading must restore all of it
    restored = _pair(name, teacher, student, tmp_path / "restored", student_seed=2)
    saved = torch.load(path)
    restored[0].load_state_dict(saved["method"])
    restored[1].load_state_dict(saved["model"])
    _, terms_next = _step(pair, 2, seed=3)
    _, terms_restored = _step(restored, 2, seed=3)
    assert list(terms_restored) == list(terms_next)
    for term in terms_next:
        assert torch.equal(terms_restored[term], terms_next[term]), (term, terms_restored[term], terms_next[term])
    for key, value in pair[0].state_dict().items():
        assert torch.equal(restored[0].state_dict()[key], value), f"method state {key} differs after the next step"

    # the teacher's weights and BN buffers are bit-identical after every step
    if t_model is not None:
        after = t_model.state_dict()
        changed = [k for k, v in t_state.items() if not torch.equal(v, after[k])]
        assert not changed, f"the steps changed the teacher: {changed}"
