"""``kdbench-search``: DisWOT's training-free student search for a teacher (Dong, Li & Wei, CVPR 2023).

    kdbench-search teacher=resnet32x4                         # rank the CIFAR zoo students for resnet32x4
    kdbench-search teacher=wrn_40_2 search.space=grid --max-params 1M
    kdbench-search teacher=resnet32x4 search.random_teacher=true then_train=kd trainer.epochs=240

The command line is kdbench's: every override ``kdbench`` takes composes the same config (dataset, teacher,
trainer, seed, ...), and the search's own keys are ``search.*`` and ``then_train`` (conf/search.yaml). Each
candidate is scored at random initialisation on one training batch of the configured dataset
(:mod:`kdbench.search.score`); the ranking is printed and written as ranking.md and ranking.csv (the CSV is what
``kdbench-table --search-scores`` reads). ``then_train=<method>`` then trains the best candidate with that method
through ``kdbench``, passing the same overrides on. Bad input is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import ConfigError

log = logging.getLogger("kdbench")
CONFIG_MODULE = "kdbench.conf"
STRATEGIES = ("auto", "exhaustive", "evolution")
_ABSENT = object()
_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kdbench-search", add_help=False,
                description="DisWOT: rank candidate students for a teacher without training them, then optionally "
                            "train the best one. Overrides are kdbench's (teacher=..., dataset=..., "
                            "trainer.device=...) "
                            "plus search.* and then_train (conf/search.yaml; docs/search.md).")
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    p.add_argument("--cfg", action="store_true", help="print the composed search settings and exit")
    p.add_argument("--space", help="search.space: zoo, grid or a list [name,...]")
    p.add_argument("--max-params", help="search.max_params: at most this many parameters (1e6, 1M)")
    p.add_argument("--max-flops", help="search.max_flops: at most this many FLOPs per image (500M, 0.5G)")
    p.add_argument("--then-train", metavar="METHOD", help="then_train: train the best candidate with METHOD")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="kdbench overrides, search.* and then_train")
    return p


# ----------------------------------------------------------------------------- the command line
@dataclasses.dataclass
class Request:
    """The command line split up: overrides for kdbench's config, for the search's, and Hydra's own (passed on
    to a then_train run only)."""

    kdbench: list[str]
    search: list[str]
    hydra: list[str]
    show_cfg: bool = False


def parse_command_line(argv: Sequence[str]) -> Request | None:
    """None for --help (printed); ConfigError for a bad command line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = _parser()
    args = parser.parse_intermixed_args(list(argv))
    if args.help:
        parser.print_help()
        return None
    overrides = list(args.overrides)
    for flag, key in (("space", "search.space"), ("max_params", "search.max_params"),
                      ("max_flops", "search.max_flops"), ("then_train", "then_train")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise ConfigError(f"bad override: {' '.join(str(e).split())}") from None
    request = Request([], [], [], show_cfg=args.cfg)
    for text, o in zip(overrides, parsed):
        key = o.key_or_group
        if o.is_sweep_override():
            raise ConfigError(f"{key}: a search takes one value per key (no sweeps); got '{text}'")
        if key == "then_train" or key == "search" or key.startswith("search."):
            request.search.append(text)
        elif key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/"):
            request.hydra.append(text)
        else:
            request.kdbench.append(text)
    return request


def _given(overrides: Sequence[str], key: str) -> str | None:
    """The value an override list gives ``key`` (the last one), if any."""
    found = None
    for text in overrides:
        name, _, value = text.partition("=")
        if name.lstrip("+~") == key:
            found = value
    return found


def search_settings(overrides: Sequence[str]) -> DictConfig:
    """conf/search.yaml with the ``search.*`` / ``then_train`` overrides applied (unknown keys refused)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    base = OmegaConf.create((files(CONFIG_MODULE) / "search.yaml").read_text())
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.key_or_group
        if o.is_delete() or o.is_add():
            raise ConfigError(f"{key}: set search keys with {key}=<value> (no + or ~)")
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        growable = parent == "search.grid"  # a grid family may be added (and must then be a known one)
        if not isinstance(node, DictConfig) or (leaf not in node and not growable):
            valid = ", ".join(node.keys()) if isinstance(node, DictConfig) else "(none)"
            raise ConfigError(f"{key}: no such key; valid: {valid}")
        OmegaConf.update(base, key, o.value(), merge=False)
    return base


def parse_count(key: str, value: Any) -> int | None:
    """A parameter or FLOP budget: a number or a number with a K / M / G / T suffix; None for no budget."""
    if value is None:
        return None
    text = str(value).strip().replace("_", "").replace(",", "")
    scale = _SUFFIXES.get(text[-1:].lower(), 1.0) if text else 1.0
    number = text[:-1] if scale != 1.0 else text
    try:
        count = float(number) * scale
    except ValueError:
        raise ConfigError(f"{key}: expected a count such as 1e6, 1.5M or 0.5G, got {value!r}") from None
    if isinstance(value, bool) or not count > 0 or count != count or count == float("inf"):
        raise ConfigError(f"{key}: must be a count > 0, got {value!r}")
    return int(count)


@dataclasses.dataclass(frozen=True)
class Settings:
    strategy: str
    exhaustive_max: int
    population: int
    sample_size: int
    parents_top: int
    cycles: int
    max_params: int | None
    max_flops: int | None
    batch_size: int
    init: str
    random_teacher: bool
    top: int | None
    out: str | None
    then_train: str | None


def check_settings(section: DictConfig) -> Settings:
    """The search section's values, type- and range-checked (one line naming the key on a bad value)."""
    from ..methods import METHODS
    from .score import INITS

    s = section.search

    def integer(key: str, value: Any, least: int, optional: bool = False) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"search.{key}: expected an integer >= {least}, got {value!r}")
        return value

    def choice(key: str, value: Any, valid: Sequence[str]) -> str:
        if value not in valid:
            raise ConfigError(f"search.{key}: unknown value '{value}'; valid: {', '.join(valid)}")
        return str(value)

    evo = s.evolution
    if not isinstance(s.random_teacher, bool):
        raise ConfigError(f"search.random_teacher: expected true or false, got {s.random_teacher!r}")
    then_train = section.get("then_train")
    if then_train is not None and str(then_train) not in METHODS:
        raise ConfigError(f"then_train: unknown method '{then_train}'; valid: {', '.join(sorted(METHODS))}")
    if s.out is not None and not isinstance(s.out, str):
        raise ConfigError(f"search.out: expected a folder path, got {s.out!r}")
    return Settings(
        strategy=choice("strategy", s.strategy, STRATEGIES),
        exhaustive_max=integer("exhaustive_max", s.exhaustive_max, 1),
        population=integer("evolution.population", evo.population, 1),
        sample_size=integer("evolution.sample_size", evo.sample_size, 1),
        parents_top=integer("evolution.parents_top", evo.parents_top, 1),
        cycles=integer("evolution.cycles", evo.cycles, 0),
        max_params=parse_count("search.max_params", s.max_params),
        max_flops=parse_count("search.max_flops", s.max_flops),
        batch_size=integer("batch_size", s.batch_size, 2), init=choice("init", s.init, INITS),
        random_teacher=s.random_teacher, top=integer("top", s.top, 1, optional=True), out=s.out,
        then_train=None if then_train is None else str(then_train))


def compose_config(request: Request, then_train: str | None) -> DictConfig:
    """kdbench's config for these overrides (the method: ``then_train``'s where it is set), with
    ``teacher.train_if_missing=false`` unless the command line sets it; ConfigError on a composition error."""
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from ..cli import _hydra_error_line, _unknown_key_line

    overrides = list(request.kdbench)
    method = _given(overrides, "method")
    if then_train is not None:
        if method is not None and method != then_train:
            raise ConfigError(f"then_train: '{then_train}' and method={method} disagree; give the method once "
                              f"(then_train={method}, with method.<key>=... overrides for its settings)")
        if method is None:
            overrides.append(f"method={then_train}")
    if _given(overrides, "teacher.train_if_missing") is None:
        overrides.append("teacher.train_if_missing=false")
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            return compose(config_name="config", overrides=overrides)
        except (MissingConfigException, ConfigCompositionException, OverrideParseException) as e:
            raise ConfigError(_unknown_key_line(e, overrides, compose) or _hydra_error_line(e)) from None
        except OmegaConfBaseException as e:
            raise ConfigError(str(e).splitlines()[0]) from None


# ----------------------------------------------------------------------------- the search
@contextlib.contextmanager
def console_logging():
    """Within the block, kdbench's log lines at INFO on this process's console (rich in a terminal, plain lines
    elsewhere), as in a ``kdbench`` run; the logger is left as it was."""
    from ..console import console_handler

    handler, level = console_handler(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def scoring_batch(cfg: DictConfig, data, task, device, batch_size: int):
    """The first training batch of the run's own loader (seed ``cfg.seed``, epoch 0: its augmentation and order)."""
    from ..distributed import World

    train, sampler, _, _ = task.loaders(cfg, data, World(), batch_size, device, {}, False)
    sampler.set_epoch(0)
    batch = next(iter(train))
    if batch.images.shape[0] < 2:
        raise ConfigError(f"dataset: the scoring batch has {batch.images.shape[0]} image; the relation term needs "
                          f"2 or more")
    return batch.images, batch.targets


def obtain_teacher(cfg: DictConfig, data, device, settings: Settings):
    """(teacher, where it came from): kdbench's teacher (``provide_teacher``: checkpoint, store, pretrained weights
    or ``teacher.random_init``), or with ``search.random_teacher`` the architecture at random initialisation
    (``teacher.seed``), re-initialised by ``search.init``. Not measured on the test set."""
    import torch

    from ..engine.teacher import provide_teacher, store_dir
    from .score import gaussian_init

    tcfg = cfg.teacher
    random_init = settings.random_teacher or bool(tcfg.get("random_init", False))
    if settings.random_teacher:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.teacher.random_init, cfg.teacher.checkpoint, cfg.teacher.pretrained = True, None, False
    elif not (random_init or tcfg.checkpoint or tcfg.pretrained or str(tcfg.name) == "ensemble"):
        directory = store_dir(cfg, data.name)
        if not ((directory / "teacher.pth").is_file() and (directory / "meta.json").is_file()) \
                and not tcfg.train_if_missing:
            raise ConfigError(f"teacher.checkpoint: none given and no trained {tcfg.name} for {data.name} in the "
                              f"store ({directory}); pass teacher.checkpoint=<path>, search.random_teacher=true (score "
                              f"at random initialisation, as DisWOT does) or teacher.train_if_missing=true")
    # the search needs no accuracy (and a full test pass of a large teacher costs minutes on a CPU)
    teacher, info = provide_teacher(cfg, data, device, measure=False)
    if random_init and settings.init == "gaussian":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(tcfg.seed))
            gaussian_init(teacher)
    source = str(info.get("checkpoint"))
    if random_init:
        source += f", {settings.init} init"
    return teacher, source


def output_folder(cfg: DictConfig, settings: Settings) -> Path:
    """``search.out``, else ``outputs/search/<dataset>/<teacher>/<time>``; ConfigError when it cannot be made."""
    from ..cli import check_output_place

    out = Path(settings.out) if settings.out else Path("outputs") / "search" / str(cfg.dataset.name) / \
        str(cfg.teacher.name) / datetime.now().strftime("%Y%m%d-%H%M%S")
    check_output_place(out, "search.out")
    return out


def run_search(cfg: DictConfig, settings: Settings, space, out: Path, console=None) -> list:
    """Score the space, print the ranking, write ``out``/ranking.md and ranking.csv; the ranked rows."""
    import torch

    from ..data import build_data
    from ..engine.runtime import resolve_channels_last, select_device
    from ..tasks import task_of
    from . import evolution
    from .report import markdown, print_ranking, rank, write_csv
    from .score import count_flops, count_params, diswot_score, measure, prepare, probe, student_seed

    started = time.perf_counter()
    if cfg.trainer.get("num_threads"):
        torch.set_num_threads(int(cfg.trainer.num_threads))
    device = select_device(str(cfg.trainer.device))
    # trainer.channels_last as a run takes it (auto: on for the CPU, where it measured faster; the same maths)
    channels_last = resolve_channels_last(cfg.trainer.channels_last, device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    task = task_of(cfg.dataset)
    data = build_data(cfg.dataset)
    images, targets = scoring_batch(cfg, data, task, device, settings.batch_size)
    images = images.contiguous(memory_format=layout)
    teacher, source = obtain_teacher(cfg, data, device, settings)
    random_teacher = settings.random_teacher or bool(cfg.teacher.get("random_init", False))
    teacher_probe = probe(teacher.to(memory_format=layout), images, targets, batch_stats=random_teacher)
    del teacher
    seed = int(cfg.seed)
    log.info("scoring %s candidates (%s) for teacher %s on %d %s training images", len(space), space.label,
             cfg.teacher.name, images.shape[0], data.name)

    results, over_budget, failed = {}, [], []

    def over(candidate, params, flops) -> bool:
        if (settings.max_params and params > settings.max_params) or \
                (settings.max_flops and flops > settings.max_flops):
            over_budget.append((candidate, params, flops))
            return True
        return False

    def evaluate(candidate):
        try:
            params, flops = measure(task.create_model, candidate.name, data.num_classes, data.image_size)
        except (NotImplementedError, RuntimeError, ValueError):  # a model the meta device cannot build or run
            params = flops = None
        if params is not None and over(candidate, params, flops):
            return None
        try:
            model = prepare(task.create_model, candidate.name, data.num_classes, data.image_size,
                            student_seed(seed), settings.init)
            if params is None:
                params, flops = count_params(model), count_flops(model, data.image_size)
                if over(candidate, params, flops):
                    return None
            score = diswot_score(probe(model.to(device=device, memory_format=layout), images, targets), teacher_probe)
        except (RuntimeError, ValueError) as e:  # e.g. a model too deep for the image size, no linear classifier
            reason = " ".join(str(e).split())[:200]
            failed.append((candidate, reason))
            log.warning("%s cannot be scored: %s", candidate.name, reason)
            return None
        results[candidate] = (candidate, score.score, score.relation, score.semantic, params, flops)
        log.info("[%d] %s: score %.6f (relation %.6f, semantic %.6f), %.3f M params, %.1f M FLOPs", len(results),
                 candidate.name, score.score, score.relation, score.semantic, params / 1e6, flops / 1e6)
        return score.score

    strategy = settings.strategy
    if strategy == "auto":
        strategy = "exhaustive" if len(space) <= settings.exhaustive_max else "evolution"
    if strategy == "exhaustive":
        evolution.exhaustive(space, evaluate)
    else:
        evolution.regularized_evolution(space, evaluate, random.Random(seed), population=settings.population,
                                        sample_size=settings.sample_size, parents_top=settings.parents_top,
                                        cycles=settings.cycles)
    if not results and not over_budget:  # every candidate failed
        raise ConfigError(f"search.space: no candidate of space '{space.label}' could be scored; "
                          f"{failed[0][0].name}: {failed[0][1]}")
    if not results:
        budget = " and ".join(f"{k}={v:,}" for k, v in (("search.max_params", settings.max_params),
                                                         ("search.max_flops", settings.max_flops)) if v)
        smallest = min(over_budget, key=lambda r: (r[1], r[2]))
        raise ConfigError(f"{budget.split('=')[0]}: no candidate of space '{space.label}' fits {budget} (smallest: "
                          f"{smallest[0].name}, {smallest[1]:,} parameters, {smallest[2]:,} FLOPs)")
    rows = rank(list(results.values()))
    elapsed = time.perf_counter() - started
    title = (f"DisWOT ranking for teacher {cfg.teacher.name} on {data.name} ({space.label} space, "
             f"{strategy}: {len(rows)} scored)")
    notes = [f"teacher: {source}",
             f"score = -(relation + semantic), higher is better; students at random initialisation ({settings.init}), "
             f"one batch of {images.shape[0]} training images, seed {seed}",
             f"FLOPs: one {data.image_size}x{data.image_size} image, 2 per multiply-add"]
    if over_budget:
        limits = ", ".join(f"{k} {v:,}" for k, v in (("params", settings.max_params), ("FLOPs", settings.max_flops))
                           if v)
        notes.append(f"{len(over_budget)} candidate(s) over the budget ({limits}) not scored")
    if failed:
        notes.append(f"{len(failed)} candidate(s) could not be scored: "
                     + "; ".join(f"{c.name} ({reason})" for c, reason in failed))
    notes.append(f"searched in {elapsed:.1f} s")
    shown = rows[: settings.top] if settings.top else rows
    hidden = [f"the best {len(shown)} of {len(rows)} shown; the files hold all"] if len(shown) < len(rows) else []
    print_ranking(shown, title, notes + hidden, console)
    from ..io import write_text

    write_text(out / "ranking.md", markdown(rows, title, notes))
    write_csv(rows, out / "ranking.csv", {"dataset": data.name, "teacher": str(cfg.teacher.name),
                                          "teacher_source": source, "init": settings.init,
                                          "batch_size": int(images.shape[0]), "seed": seed})
    log.info("wrote %s, %s", out / "ranking.md", out / "ranking.csv")
    return rows


def kdbench_command() -> list[str]:
    """How to start ``kdbench`` with this interpreter: its console script beside it, else ``python -m``."""
    script = Path(sys.executable).parent / "kdbench"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("kdbench")
    return [found] if found else [sys.executable, "-m", "kdbench.cli"]


def then_train(request: Request, best, method: str) -> int:
    """Train ``best`` with ``method`` through ``kdbench``, with the search's kdbench and Hydra overrides (not its
    own keys, nor the student); kdbench's exit code."""
    passed = [o for o in request.kdbench if not (o.partition("=")[0].lstrip("+~") == "student"
                                                  or o.partition("=")[0].lstrip("+~").startswith("student."))]
    passed = [o for o in passed if o.partition("=")[0].lstrip("+~") != "method"]
    command = kdbench_command() + passed + best.train_overrides + [f"method={method}"] + request.hydra
    log.info("training the best candidate: kdbench %s", " ".join(command[1:] if len(command) and
                                                                 Path(command[0]).name == "kdbench" else command))
    sys.stdout.flush()
    return subprocess.call(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``kdbench-search``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        request = parse_command_line(argv)
        if request is None:
            return 0
        section = search_settings(request.search)
        settings = check_settings(section)
        cfg = compose_config(request, settings.then_train)
        from ..cli import validate
        from ..tasks import task_of
        from .space import build_space

        if task_of(cfg.dataset).name != "classification":
            raise ConfigError(f"dataset: DisWOT scores classifiers; dataset {cfg.dataset.name} is a "
                              f"{task_of(cfg.dataset).name} task")
        space = build_space(section.search, int(cfg.dataset.image_size))
        if request.show_cfg:
            print(OmegaConf.to_yaml(OmegaConf.create({"search": OmegaConf.to_container(section.search, resolve=True),
                                                      "then_train": settings.then_train,
                                                      "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
                                                      "teacher": OmegaConf.to_container(cfg.teacher, resolve=True)})))
            return 0
        validate(cfg)
        out = output_folder(cfg, settings)
        with console_logging():
            rows = run_search(cfg, settings, space, out)
    except ConfigError as e:
        print(f"kdbench-search: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if settings.then_train:
        with console_logging():
            return then_train(request, rows[0].candidate, settings.then_train)
    return 0


if __name__ == "__main__":
    sys.exit(main())
