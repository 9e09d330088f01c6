"""Paper presets (conf/experiment/{cifar100,pld,imagenet}/*.yaml): each composes through Hydra from the package's
config module, carries the published recipe and per-pair hyper-parameters, and its models and method losses build
and run on a small batch. Plus the ImageNet ImageFolder dataset on a tiny tree in the real layout."""

from __future__ import annotations

import copy
import functools
import os
from importlib import resources
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, run_cli
from method_harness import make_context, run_step

from kdbench.cli import validate
from kdbench.data import build_data, build_transforms, check_data
from kdbench.engine.build import size_method
from kdbench.errors import ConfigError
from kdbench.methods import Batch, Progress, build_method
from kdbench.models import create_model, run_model
from kdbench.results.reference import CRD_PAIRS, PAIRS, list_references

EXPERIMENTS = resources.files("kdbench.conf").joinpath("experiment")
PRESETS = sorted(f"{folder}/{p.name[:-5]}" for folder in ("cifar100", "pld", "imagenet")
                 for p in EXPERIMENTS.joinpath(folder).iterdir() if p.name.endswith(".yaml"))
CIFAR = [p for p in PRESETS if p.startswith("cifar100/")]
PLD = [p for p in PRESETS if p.startswith("pld/")]
IMAGENET = [p for p in PRESETS if p.startswith("imagenet/") and not p.startswith("imagenet/mealv2")]
MEALV2 = [p for p in PRESETS if p.startswith("imagenet/mealv2")]
PAIR_PRESETS = CIFAR + PLD + IMAGENET  # distillation of one teacher into one student, with the DKD / PLD recipes


def compose_preset(preset: str, *overrides: str):
    """The composed config (a private copy; compositions are cached per environment and overrides)."""
    return copy.deepcopy(_compose(preset, overrides, os.environ.get("KDBENCH_TEACHERS")))


@functools.cache
def _compose(preset: str, overrides: tuple[str, ...], teachers: str | None):
    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}", *overrides])
    OmegaConf.resolve(cfg)  # resolve now, while KDBENCH_TEACHERS is what the cache key says
    return cfg


@pytest.fixture(autouse=True)
def _no_teacher_folder(monkeypatch):
    monkeypatch.delenv("KDBENCH_TEACHERS", raising=False)


def test_the_preset_set():
    # the 13 CRD pairs plus the four extra pairs of the logit-standardisation README, named like mdistiller's files
    assert {p.split("/")[1] for p in CIFAR} == {name for name, pair in PAIRS.items() if pair.dataset == "cifar100"}
    assert set(CRD_PAIRS) <= {p.split("/")[1] for p in CIFAR} and len(CRD_PAIRS) == 13
    assert PLD == ["pld/cifar100_res32x4_res8x4", "pld/cifar100_res50_mv2", "pld/cifar100_res56_res20",
                   "pld/cifar100_wrn40_2_wrn40_1"]
    assert IMAGENET == ["imagenet/r34_r18", "imagenet/r50_mv1"]
    assert MEALV2 == ["imagenet/mealv2_r50"]


def check_cifar_recipe(preset, cfg):
    validate(cfg, check_files=False)  # schemas, method hyper-parameter types, model names
    name = preset.split("/")[1].removeprefix("cifar100_")
    assert cfg.dataset.name == "cifar100"
    assert (cfg.teacher.name, cfg.student.name) == (PAIRS[name].teacher, PAIRS[name].student)
    assert cfg.teacher.checkpoint is None  # no KDBENCH_TEACHERS: the teacher store provides the teacher
    light = cfg.student.name in ("MobileNetV2", "ShuffleV1", "ShuffleV2")
    if preset in CIFAR:  # the CRD / mdistiller recipe
        assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (240, 64)
        assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.9, 5e-4)
        assert list(cfg.optim.milestones) == [150, 180, 210] and cfg.optim.schedule == "multistep"
        assert cfg.optim.lr == (0.01 if light else 0.05)
    else:  # the PLD paper's recipe (Sec. 5.1)
        assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (250, 128)
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.schedule) == ("adamw", 1e-3, 0.5, "cosine")
        assert cfg.pair_overrides.pld.temperature == 4.0


# DKD beta per pair, as mdistiller configs/cifar100/dkd/<pair>.yaml (8.0 where the file sets none: the CFG default)
DKD_BETA = {"res32x4_res8x4": 8.0, "res56_res20": 2.0, "res110_res32": 2.0, "vgg13_vgg8": 6.0, "vgg13_mv2": 6.0,
            "wrn40_2_wrn16_2": 6.0, "wrn40_2_wrn40_1": 6.0, "res50_mv2": 8.0, "res32x4_shuv1": 8.0,
            "res32x4_shuv2": 8.0, "wrn40_2_shuv1": 8.0}


@pytest.mark.parametrize("preset", CIFAR)
def test_preset_names_the_tables_that_report_its_pair(preset):
    """The header line "Published numbers for this pair (...): a, b" agrees with the shipped reference tables."""
    text = EXPERIMENTS.joinpath(f"{preset}.yaml").read_text()
    line = next(l for l in text.splitlines() if l.startswith("# Published numbers for this pair"))
    named = [t.strip().rstrip(".") for t in line.split(":", 1)[1].split(",")]
    pair = tuple(PAIRS[preset.split("/")[1]])
    reporting = [r.name for r in list_references() if r.combine and any((c.dataset, c.teacher, c.student) == pair
                                                                        for c in r.cells)]
    assert named == reporting


def test_published_overrides_and_the_command_line():
    cfg = compose_preset("cifar100/res56_res20", "method=dkd", "method.beta=3.5")
    assert cfg.method.beta == 3.5 and cfg.pair_overrides.dkd.beta == 2.0  # the command line wins
    # a pair without a published DKD beta keeps the method's default
    assert compose_preset("cifar100/res50_vgg8", "method=dkd").method.beta == 8.0
    # ReviewKD's per-pair weight (dvlab-research/ReviewKD CIFAR-100/script/reviewKD.sh), ND's KD++ / DKD++ weights
    assert compose_preset("cifar100/res56_res20", "method=reviewkd").method.reviewkd_weight == 0.6
    assert compose_preset("cifar100/res32x4_shuv2", "method=reviewkd").method.reviewkd_weight == 8.0
    kdpp = compose_preset("cifar100/res50_mv2", "method=kdpp").method
    assert (kdpp.kd_weight, kdpp.nd_weight) == (3.0, 0.5)
    dkdpp = compose_preset("cifar100/res32x4_shuv1", "method=dkdpp").method
    assert (dkdpp.alpha, dkdpp.beta, dkdpp.nd_weight) == (0.5, 8.0, 4.0)
    # logit standardisation (their README's log names: base temperature, kd weight, DKD beta)
    ls = compose_preset("cifar100/res110_res20").pair_overrides.logit_stand
    assert (ls.kd.temperature, ls.kd.kd_weight) == (4.0, 12.0)
    assert (ls.dkd.alpha, ls.dkd.beta, ls.dkd.temperature) == (15.0, 30.0, 2.0)
    assert (ls.mlkd.temperature, ls.mlkd.kd_weight) == (2.0, 9.0)


def test_community_teacher_folder(monkeypatch, tmp_path):
    # RepDistiller / mdistiller layout: <folder>/<name>_vanilla/ckpt_epoch_240.pth (ResNet50 with a capital R)
    monkeypatch.setenv("KDBENCH_TEACHERS", str(tmp_path / "cifar_teachers"))
    cfg = compose_preset("cifar100/res50_mv2")
    assert cfg.teacher.checkpoint == str(tmp_path / "cifar_teachers" / "ResNet50_vanilla" / "ckpt_epoch_240.pth")
    assert compose_preset("cifar100/wrn40_2_shuv1").teacher.checkpoint.endswith("/wrn_40_2_vanilla/ckpt_epoch_240.pth")
    assert compose_preset("pld/cifar100_res56_res20").teacher.checkpoint.endswith("/resnet56_vanilla/ckpt_epoch_240.pth")
    # a folder given on the command line, and an explicit checkpoint, win
    assert compose_preset("cifar100/vgg13_vgg8", "community_teachers=/ckpt").teacher.checkpoint == \
        "/ckpt/vgg13_vanilla/ckpt_epoch_240.pth"
    assert compose_preset("cifar100/vgg13_vgg8", "teacher.checkpoint=/t.pth").teacher.checkpoint == "/t.pth"
    # the run is refused before it starts when that folder lacks the teacher
    cfg = compose_preset("cifar100/res32x4_res8x4")
    cfg.dataset.download = True  # (no data needed for this check)
    with pytest.raises(ConfigError, match="teacher.checkpoint: no file at .*resnet32x4_vanilla/ckpt_epoch_240.pth"):
        validate(cfg, check_files=True)


def check_imagenet_recipe(preset, cfg):
    validate(cfg, check_files=False)
    assert (cfg.dataset.name, cfg.dataset.image_size, cfg.dataset.num_classes, cfg.dataset.augment) == \
        ("imagenet", 224, 1000, "imagenet")
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (100, 256)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, list(cfg.optim.milestones)) == \
        ("sgd", 0.1, 1e-4, [30, 60, 90])
    assert cfg.teacher.pretrained is True and cfg.teacher.checkpoint is None
    expected = {"imagenet/r34_r18": ("resnet34.tv_in1k", "resnet18", 0.5), "imagenet/r50_mv1": ("resnet50.tv_in1k", "mobilenetv1_100", 2.0)}
    assert (cfg.teacher.name, cfg.student.name, cfg.method.beta) == expected[preset]
    assert cfg.pair_overrides.kd.temperature == 1.0 and cfg.pair_overrides.kd.batch_size == 512


# ----------------------------------------------------------------------------- models and losses
_MODELS: dict[tuple[str, int], torch.nn.Module] = {}


def small(cfg) -> int:
    """The image size the models are run at: the preset's, but ImageNet models (convolutional, resolved at 224 px)
    get 64 px images so the check stays fast."""
    size = int(cfg.dataset.image_size)
    return min(size, 64)


def model(name: str, image_size: int) -> torch.nn.Module:
    """Each distinct model is built once (100 classes), in eval mode with fixed weights; ``image_size`` is the
    dataset's (it decides between the CIFAR zoo and timm)."""
    key = (name, image_size)
    if key not in _MODELS:
        torch.manual_seed(0)
        _MODELS[key] = create_model(name, 100, image_size=image_size).eval()
    return _MODELS[key]


def run_method(cfg, cache_dir: Path) -> dict[str, torch.Tensor]:
    """Build the preset's method on its pair (sized from a probe, as the trainer does) and compute its loss terms
    on two images; the student's gradient must be finite."""
    size = small(cfg)
    method = build_method(cfg.method)
    student = model(cfg.student.name, int(cfg.dataset.image_size))
    teacher = model(cfg.teacher.name, int(cfg.dataset.image_size)).requires_grad_(False) if method.uses_teacher else None
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, size, size, generator=gen)
    targets = torch.tensor([3, 7])
    size_method(method, student, teacher, images, make_context(teacher, 100, images, targets, cache_dir))
    batch = Batch(images, targets, torch.arange(2), {n: images.flip(-1) for n in method.views})
    loss, terms = run_step(method, student, teacher, batch,
                           Progress(epoch=30, epochs=int(cfg.trainer.epochs), step=100, steps_per_epoch=4), train=False)
    assert torch.isfinite(loss), terms
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    return terms


def loss_method(preset: str) -> str:
    """The method each preset's loss is run with: PLD for the PLD-recipe presets, else DKD (both read the
    preset's pair_overrides)."""
    return "pld" if preset.startswith("pld/") else "dkd"


@pytest.mark.parametrize("preset", PAIR_PRESETS)
def test_preset(preset, tmp_path):
    """Composes with its recipe; its models build (100 classes) and its method loss runs on two images."""
    cfg = compose_preset(preset, f"method={loss_method(preset)}")
    (check_imagenet_recipe if preset in IMAGENET else check_cifar_recipe)(preset, cfg)
    size = small(cfg)
    for name in (cfg.teacher.name, cfg.student.name):
        out = model(name, int(cfg.dataset.image_size))(torch.zeros(2, 3, size, size))
        assert out.shape == (2, 100)
    terms = run_method(cfg, tmp_path)
    if preset.startswith("pld/"):
        assert set(terms) == {"pld"}  # PLD replaces cross-entropy
    else:
        name = preset.split("/")[1]
        assert cfg.method.beta == DKD_BETA.get(name, {"r34_r18": 0.5, "r50_mv1": 2.0}.get(name, 8.0))
        assert set(terms) == {"ce", "dkd"}


def test_help_lists_the_presets(tmp_path, env):
    out = run_cli(["--help"], tmp_path, env)
    assert out.returncode == 0, out.stderr
    assert "experiment/cifar100: res110_res20, res110_res32, res32x4_res8x4" in out.stdout
    assert "experiment/imagenet: mealv2_r50, r34_r18, r50_mv1" in out.stdout
    assert "experiment/random_teachers: cifar10, cifar100" in out.stdout
    assert "experiment/pld: cifar100_res32x4_res8x4" in out.stdout
    assert "experiment=cifar100/res32x4_res8x4" in out.stdout  # how to type a nested preset


# ----------------------------------------------------------------------------- ImageNet data
def write_imagefolder(root: Path, classes=("n01440764", "n01443537", "n01484850"), per_class=2) -> Path:
    """<root>/{train,val}/<wnid>/*.JPEG, as ImageNet's tree (small JPEGs of different sizes)."""
    for split in ("train", "val"):
        for c, wnid in enumerate(classes):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                colour = (40 * c + 20, 100 + 10 * i, 200 - 30 * c)
                Image.new("RGB", (48 + 8 * i, 40 + 4 * c), colour).save(folder / f"{wnid}_{split}_{i}.JPEG", "JPEG")
    return root


def test_imagenet_imagefolder_loads(tmp_path):
    root = write_imagefolder(tmp_path / "imagenet")
    cfg = compose_preset("imagenet/r34_r18", f"dataset.root={root}", "dataset.num_workers=0").dataset
    check_data(cfg)
    bundle = build_data(cfg)
    assert (len(bundle.train), len(bundle.test), bundle.image_size) == (6, 6, 224)
    assert bundle.train.classes == ["n01440764", "n01443537", "n01484850"]
    assert bundle.train.targets == [0, 0, 1, 1, 2, 2]
    train_tf = build_transforms(cfg.augment, bundle.image_size, cfg.mean, cfg.std, train=True)
    test_tf = build_transforms(cfg.augment, bundle.image_size, cfg.mean, cfg.std, train=False)
    image, target = bundle.train[3]
    x = train_tf(image, 1234)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and target == 1
    assert torch.equal(x, train_tf(image, 1234))  # the random crop is a function of the sample seed
    y = test_tf(bundle.test[0][0])
    assert y.shape == (3, 224, 224)
    # the test transform is resize 256 + centre crop: a uniform image stays uniform and normalised per channel
    expected = (torch.tensor((20, 100, 200)) / 255 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    assert torch.allclose(y.mean(dim=(1, 2)), expected, atol=0.03)


@pytest.mark.parametrize("missing", ["train", "val"])
def test_imagenet_missing_split_is_one_line(tmp_path, missing):
    root = write_imagefolder(tmp_path / "imagenet", per_class=1)
    for f in (root / missing).rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted((root / missing).rglob("*"), reverse=True):
        d.rmdir()
    (root / missing).rmdir()
    cfg = compose_preset("imagenet/r50_mv1", f"dataset.root={root}").dataset
    with pytest.raises(ConfigError) as err:
        check_data(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"dataset.root: no {missing}/ folder at {root / missing}")


def test_imagenet_cannot_download(tmp_path):
    cfg = compose_preset("imagenet/r34_r18", f"dataset.root={tmp_path}", "dataset.download=true").dataset
    with pytest.raises(ConfigError, match="dataset.download: imagenet cannot be downloaded"):
        check_data(cfg)


def test_presets_ship_in_the_package_data():
    text = (REPO / "pyproject.toml").read_text()
    assert '"kdbench.conf" = ["*.yaml", "**/*.yaml"]' in text
    assert os.path.isfile(REPO / "conf" / "optim" / "imagenet.yaml") and os.path.isfile(REPO / "conf" / "dataset" / "imagenet.yaml")


def test_fast_trainer_preset_keeps_the_recipe_and_adds_only_same_maths_options():
    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        default = compose(config_name="config").trainer
        fast = compose(config_name="config", overrides=["trainer=fast"]).trainer
        on_top = compose(config_name="config", overrides=["experiment=cifar100/res32x4_res8x4", "trainer=fast"])
    changed = {k for k in default if default[k] != fast[k]}
    assert changed == {"channels_last", "compile"} and fast.channels_last and fast.compile
    assert fast.precision == "fp32" and fast.epochs == 240 and fast.batch_size == 64
    assert on_top.trainer.compile and on_top.trainer.epochs == 240


@pytest.mark.parametrize("preset", MEALV2)
def test_mealv2_preset(preset):
    """MEAL V2's README command (szq0214/MEAL-V2 @ 59e6bca): two pretrained teachers averaged after the softmax, a
    pretrained student, SGD without weight decay, lr 0.01 then 0.001, batch 512, 180 epochs."""
    cfg = compose_preset(preset)
    validate(cfg, check_files=False)  # members, names and the ensemble's keys checked as for a run
    assert cfg.method.name == "mealv2" and cfg.dataset.name == "imagenet" and cfg.dataset.augment == "imagenet"
    assert cfg.teacher.name == "ensemble" and cfg.teacher.combine == "probs" and cfg.teacher.pretrained
    assert list(cfg.teacher.members) == ["senet154.gluon_in1k", "resnet152s.gluon_in1k"]
    assert cfg.student.pretrained and cfg.student.name == "resnet50.ram_in1k"
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (180, 512)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.01, 0.9, 0.0)
    assert list(cfg.optim.milestones) == [101] and cfg.optim.gamma == 0.1
