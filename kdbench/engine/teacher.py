"""Obtain the frozen teacher: a checkpoint path, timm pretrained weights, the teacher store, or the architecture at
random initialisation (``teacher.random_init``: seeded by ``teacher.seed``, as the random teachers of Sarnthein et al.).

The store keeps teachers trained by kdbench itself, keyed by dataset, architecture, epochs and seed:
``<store>/teachers/<dataset>/<arch>/e<epochs>-s<seed>/teacher.pth`` (community format: ``{"model": ...}``)
with ``meta.json`` (its measured accuracy) and the training run's own directory. A missing teacher is trained
first with the ``ce`` recipe, under a file lock, so concurrent jobs of a sweep train it once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import ConfigError
from ..io import save_torch, write_json
from ..models import load_checkpoint
from ..tasks import task_of
from ..methods import task_only_config
from .optim import strategy_of

log = logging.getLogger("kdbench")


# The trainer keys of the teacher's own training config that make its recipe (with all of optim and the dataset
# but its paths); the rest (device, loader, logging, cadences) changes how it runs, not what it learns.
RECIPE_TRAINER_KEYS = ("epochs", "iterations", "batch_size", "precision", "max_steps_per_epoch")
NOT_RECIPE_DATASET_KEYS = ("root", "download", "num_workers")


def recipe_hash(teacher_cfg: DictConfig) -> str:
    """8 hex digits over a store teacher's recipe (``teacher_cfg``: its own training config): its whole optimiser
    and schedule, batch size, length, precision and the dataset's settings (augmentation, sizes, normalisation), so
    differently trained teachers never share a key."""
    tcfg = OmegaConf.to_container(teacher_cfg, resolve=True)
    dataset = {k: v for k, v in tcfg["dataset"].items() if k not in NOT_RECIPE_DATASET_KEYS}
    # split keys that split nothing for the teacher's recipe leave the key as it was before splits existed
    if dataset.get("validation_fraction", 0) in ("auto", 0, None):
        dataset.pop("validation_fraction", None)
    if dataset.get("labelled_fraction", 1) == 1:
        dataset.pop("labelled_fraction", None)
    if not {"validation_fraction", "labelled_fraction"} & set(dataset):
        dataset.pop("split_seed", None)
    recipe = {"optim": tcfg["optim"], "trainer": {k: tcfg["trainer"].get(k) for k in RECIPE_TRAINER_KEYS},
              "dataset": dataset}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:8]


def store_dir(cfg: DictConfig, dataset_name: str) -> Path:
    """``<store>/teachers/<dataset>/<arch>/e<epochs>-s<seed>-r<recipe hash>`` (``i<iterations>`` for an
    iteration-based recipe). An entry written before recipe hashes (``e<epochs>-s<seed>``) is still used where no
    hashed entry exists, with a log line: its recipe was not recorded."""
    t, own = cfg.teacher, teacher_training_config(cfg)
    length = f"i{int(own.trainer.iterations)}" if own.trainer.get("iterations") else f"e{int(t.train_epochs)}"
    folder = Path(str(cfg.store)).expanduser() / "teachers" / dataset_name / str(t.name)
    hashed, legacy = folder / f"{length}-s{int(t.seed)}-r{recipe_hash(own)}", folder / f"{length}-s{int(t.seed)}"
    if not (hashed / "teacher.pth").is_file() and (legacy / "teacher.pth").is_file() and (legacy / "meta.json").is_file():
        log.info("teacher store: using %s, written before the store recorded recipes (its recipe is not checked)",
                 legacy)
        return legacy
    return hashed


def teacher_training_config(cfg: DictConfig) -> DictConfig:
    """The run's config turned into the teacher's own recipe: method=ce, student=<teacher arch>, and
    ``teacher.recipe`` (per group: ``{trainer: {iterations: ...}, optim: {milestones: [...]}}``) over it."""
    tcfg = copy.deepcopy(cfg)
    with open_dict(tcfg):
        tcfg.method = task_only_config()
        # store teachers start from scratch (a pretrained or checkpoint teacher never reaches the store)
        tcfg.student = OmegaConf.create({"name": cfg.teacher.name, "checkpoint": None, "pretrained": False})
        tcfg.seed = int(cfg.teacher.seed)
        tcfg.trainer.epochs = int(cfg.teacher.train_epochs)
        if task_only := strategy_of(tcfg.optim).task_only:  # a teacher trains on its task loss alone
            tcfg.optim.name = task_only
        tcfg.resume = True  # a teacher run killed half-way continues where it stopped
        tcfg.logger.mode = "disabled"
        # the teacher's own recipe where it differs from the student's (a detection teacher's 3x schedule)
        for group, values in (cfg.teacher.get("recipe") or {}).items():
            tcfg[group] = OmegaConf.merge(tcfg[group], values)
    return tcfg


def _train_into_store(cfg: DictConfig, directory: Path, dataset_name: str) -> None:
    from .trainer import train

    if not cfg.teacher.train_if_missing:
        raise ConfigError(f"teacher.checkpoint: none given and no trained {cfg.teacher.name} for {dataset_name} in the "
                          f"store ({directory}); pass teacher.checkpoint=<path> or teacher.train_if_missing=true")
    log.info("teacher %s for %s not in the store: training it first (%d epochs, ce recipe) in %s",
             cfg.teacher.name, dataset_name, int(cfg.teacher.train_epochs), directory)
    record = train(teacher_training_config(cfg), directory / "run")
    best = directory / "run" / "checkpoints" / "best.pt"
    state = torch.load(directory / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    # The store keeps the final (last-epoch) weights, as the community teachers are ckpt_epoch_240.pth.
    metrics, primary = record["metrics"], task_of(cfg.dataset).primary.name
    # teacher.pth last: it marks the entry complete (a builder killed before it leaves an entry the next one redoes)
    write_json(directory / "meta.json", {"name": str(cfg.teacher.name), "dataset": dataset_name,
                                         **{k[len("last_"):]: v for k, v in metrics.items() if k.startswith("last_")},
                                         "epochs": record["epochs_run"], "best_checkpoint": str(best)})
    save_torch(directory / "teacher.pth", {"model": state["model"], "epoch": state["epoch"],
                                          "best_acc": metrics[f"best_{primary}"]})


ENSEMBLE = "ensemble"
# The keys a member given by name takes from the ensemble's own config (its defaults for every member).
MEMBER_DEFAULTS = ("pretrained", "train_if_missing", "train_epochs", "seed", "recipe")


def member_config(cfg: DictConfig, entry, position: int) -> DictConfig:
    """The run's config with ``teacher`` replaced by ensemble member ``entry`` (a teacher name, or a mapping of teacher
    keys with at least ``name``): the shipped conf/teacher/<name>.yaml where there is one, the ensemble's defaults
    for ``MEMBER_DEFAULTS``, then the entry's own keys."""
    from importlib.resources import files

    where = f"teacher.members[{position}]"
    entry = OmegaConf.to_container(entry, resolve=True) if OmegaConf.is_config(entry) else entry
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or entry["name"] == ENSEMBLE:
        raise ConfigError(f"{where}: expected a teacher name or a mapping with a 'name' (not another ensemble), got {entry!r}")
    ens = cfg.teacher
    base = {"name": entry["name"], "checkpoint": None, "random_init": False,
            **{k: ens.get(k) for k in MEMBER_DEFAULTS}}
    shipped = files("kdbench.conf") / "teacher" / f"{entry['name']}.yaml"
    if shipped.is_file():
        base.update({k: v for k, v in OmegaConf.to_container(OmegaConf.create(shipped.read_text())).items()
                     if k not in MEMBER_DEFAULTS and k not in ("train_epochs",)})
    unknown = set(entry) - set(base)
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: not a teacher key; valid: {', '.join(sorted(base))}")
    member = copy.deepcopy(cfg)
    with open_dict(member):
        member.teacher = OmegaConf.create({**base, **entry})
    return member


def is_ensemble(cfg: DictConfig) -> bool:
    return str(cfg.teacher.name) == ENSEMBLE


def teacher_configs(cfg: DictConfig) -> list[DictConfig]:
    """The run config of each teacher a run obtains: the run's own, or one per ensemble member (``member_config``),
    after checking the ensemble's own keys."""
    if not is_ensemble(cfg):
        return [cfg]
    from ..models.ensemble import COMBINES

    ens, task = cfg.teacher, task_of(cfg.dataset)
    members = list(ens.get("members") or [])
    if len(members) < 1:
        raise ConfigError("teacher.members: an ensemble needs at least one member, e.g. "
                          "teacher.members=[resnet56,wrn_40_2]")
    if not task.ensemble_teachers:
        raise ConfigError(f"teacher=ensemble: the {task.name} task takes a single teacher (dataset {cfg.dataset.name})")
    if ens.get("checkpoint") or ens.get("random_init"):
        raise ConfigError("teacher.checkpoint: an ensemble takes its weights per member "
                          "(teacher.members=[{name: ..., checkpoint: ...}, ...])")
    if str(ens.combine) not in COMBINES:
        raise ConfigError(f"teacher.combine: unknown value '{ens.combine}'; valid: {', '.join(COMBINES)}")
    if not 0 <= int(ens.features_from) < len(members):
        raise ConfigError(f"teacher.features_from: {ens.features_from} is not a member index (0..{len(members) - 1})")
    return [member_config(cfg, entry, position) for position, entry in enumerate(members)]


def provide_ensemble(cfg: DictConfig, data, device, measure: bool = True):
    """(ensemble, info): every member obtained like a single teacher (checkpoint, store, pretrained, random init),
    frozen together; info lists each member's own info and measured metrics, and the ensemble's."""
    from ..models.ensemble import TeacherEnsemble

    ens, task = cfg.teacher, task_of(cfg.dataset)
    models, infos = [], []
    for member in teacher_configs(cfg):
        model, info = provide_teacher(member, data, device, measure=measure)
        models.append(model)
        infos.append(info)
    model = TeacherEnsemble(models, combine=str(ens.combine), features_from=int(ens.features_from))
    model.eval().requires_grad_(False).to(device)
    measured = _measured(cfg, task, model, data, device) if measure else {}
    info = {"name": ENSEMBLE, "resolved": model.kdbench_name, "checkpoint": None, "combine": str(ens.combine),
            "features_from": int(ens.features_from), "members": infos,
            "params": sum(p.numel() for p in model.parameters()), **measured}
    log.info("teacher ensemble of %d (%s, combine %s): %s", len(models), ", ".join(i["name"] for i in infos),
             ens.combine, _scores(measured))
    return model, info


def _measured(cfg: DictConfig, task, model, data, device) -> dict[str, float]:
    """The frozen teacher's metrics on the test set."""
    return task.evaluate(model, task.test_loader(cfg, data, device), device, str(cfg.trainer.precision),
                         data.num_classes)


def _scores(measured: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.2f}" for k, v in measured.items()) or "not measured"


def provide_teacher(cfg: DictConfig, data, device, measure: bool = True):
    """(teacher, info) for the run: frozen, eval mode, no grad, on ``device``; info (with the teacher's measured
    metrics) goes into result.json. ``teacher=ensemble``: several teachers behind one (``provide_ensemble``).
    ``measure=False``: a teacher the store has not measured is not scored on the test set (no metrics in info)."""
    if is_ensemble(cfg):
        return provide_ensemble(cfg, data, device, measure)
    tcfg, task = cfg.teacher, task_of(cfg.dataset)
    random_init = bool(tcfg.get("random_init", False))
    if random_init and (tcfg.checkpoint or tcfg.pretrained):
        raise ConfigError("teacher.random_init: a randomly initialised teacher takes no weights; drop "
                          "teacher.checkpoint / teacher.pretrained, or set teacher.random_init=false")
    with torch.random.fork_rng(devices=[]):  # a random teacher is a function of teacher.seed alone
        torch.manual_seed(int(tcfg.seed))
        model = task.create_model(tcfg.name, data.num_classes, image_size=data.image_size,
                                  pretrained=bool(tcfg.pretrained) and not tcfg.checkpoint, role="teacher")  # a checkpoint wins
    measured = None
    if random_init:
        source = f"random init (seed {int(tcfg.seed)})"
    elif tcfg.checkpoint:
        source = str(Path(str(tcfg.checkpoint)).expanduser())
        load_checkpoint(model, source)
    elif tcfg.pretrained:
        source = f"timm:{model.kdbench_name}"
    else:
        directory = store_dir(cfg, data.name)
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(directory / "train.lock")):
            if not ((directory / "teacher.pth").is_file() and (directory / "meta.json").is_file()):
                _train_into_store(cfg, directory, data.name)
        source = str(directory / "teacher.pth")
        load_checkpoint(model, source)
        meta = json.loads((directory / "meta.json").read_text())
        measured = {m.name: meta[m.name] for m in task.metrics}
    model.eval().requires_grad_(False).to(device)
    if measured is None:
        measured = _measured(cfg, task, model, data, device) if measure else {}
    info = {"name": str(tcfg.name), "resolved": model.kdbench_name, "checkpoint": source,
            "params": sum(p.numel() for p in model.parameters()), **measured}
    log.info("teacher %s (%s): %s", tcfg.name, source, _scores(measured))
    return model, info
