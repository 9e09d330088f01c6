"""The ``kdbench`` command: Hydra composes the run, the engine trains it, result.json records it.

Before Hydra starts a job, the command line is checked (every group choice exists, model names resolve,
hyper-parameters have the right types, the data and checkpoint files are there) so that bad input gives one
line naming the key and what is valid, exit code 2, and no run directory at all.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

log = logging.getLogger("kdbench")
CONFIG_MODULE = "kdbench.conf"
# Preflight composes at most this many jobs of a sweep (each distinct group choice is checked regardless).
PREFLIGHT_MAX_JOBS = 64


def fail(message: str, code: int = 2) -> None:
    print(f"kdbench: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _group_choices(group: str) -> list[str]:
    """Every option of a config group, nested ones as ``sub/option`` (``experiment``: ``cifar100/res32x4_res8x4``,
    ..., ``quickstart``); empty when Hydra is not initialised."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return []
    loader = GlobalHydra.instance().config_loader()
    nested = [f"{sub}/{option}" for sub in loader.list_groups(group) for option in _group_choices(f"{group}/{sub}")]
    return sorted(set(loader.get_group_options(group)) | set(nested), key=str.lower)


def _hydra_error_line(e: Exception) -> str:
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" in str(e.missing_cfg_file):
        missing = str(e.missing_cfg_file)
        group, choice = missing.rsplit("/", 1)
        # Hydra names the group whose choice it looked up ("Available options in 'experiment'"); a nested choice
        # (experiment=cifar100/nope) is that group's, listed with every nested option the user can choose.
        named = next((line.split("'")[1] for line in str(e).splitlines() if line.startswith("Available options in '")), None)
        options = list(e.options or [])
        if named and missing.startswith(named + "/"):
            group, choice = named, missing[len(named) + 1:]
            options = _group_choices(group) or options
        options_text = ", ".join(sorted(options, key=str.lower)) or "(none)"
        return f"{group}: unknown choice '{choice}'; valid: {options_text}"
    text = " ".join(line.strip() for line in str(e).strip().splitlines() if line.strip())
    return text.split(" Config search path")[0]


def _unknown_key_line(e: Exception, job: list[str], compose) -> str | None:
    """Hydra's "Could not override 'group.key'" as kdbench's line: the key, and the keys that group has in this
    composition (for ``method``: the method's hyper-parameters)."""
    import re

    match = re.search(r"Could not override '([\w.]+)'", str(e))
    if not match or "." not in match.group(1):
        return None
    key = match.group(1)
    group = key.split(".")[0]
    choices = [o for o in job if "." not in o.split("=", 1)[0]]  # the group choices alone (method=dkd, ...)
    try:
        section = compose(config_name="config", overrides=choices).get(group)
    except Exception:  # noqa: BLE001 - the rest does not compose either: Hydra's own line says why
        return None
    if not isinstance(section, DictConfig):
        return None
    valid = [k for k in section if k not in ("_target_", "name")]
    what = f"{group}={section.get('name')}" if section.get("name") else group
    return f"{key}: no such key in {what}; valid: {', '.join(valid) or '(none)'}"


def _job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of each job a (multi)run would launch, as Hydra's sweeper expands them (a glob over a
    config group's options, ``experiment=glob(cifar100/*)``, is expanded against the group's options)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    parsed = OverridesParser.create().parse_overrides(overrides)
    if not multirun:
        return [overrides]
    choices = []
    for o in parsed:
        key = o.get_key_element()
        if isinstance(o.value(), Glob):
            group = o.get_key_element().split("@")[0].lstrip("+~")
            options = GlobalHydra.instance().config_loader().get_group_options(group)
            values = o.value().filter(options)
            if not values:
                raise ConfigError(f"{key}: glob({','.join(o.value().include)}) matches none of the options {', '.join(options)} "
                                  f"(a glob sees only the group's top level; list nested ones: {key}=a/x,a/y)")
        else:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values])
    return [list(job) for job in itertools.product(*choices)]


def preflight(argv: list[str]) -> None:
    """Compose and validate what ``argv`` asks for; ConfigError / SystemExit(2) on bad input."""
    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser

    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            args = get_args_parser().parse_args(argv)
    except SystemExit as e:
        if e.code in (0, None):
            return
        error = [line for line in usage.getvalue().splitlines() if "error: " in line]
        fail(error[-1].split("error: ", 1)[1] + " (overrides go after the flags: kdbench [flags] key=value ...)"
             if error else "bad command line; see kdbench --help")
    modes = [flag for flag in ("run", "multirun", "cfg", "info", "shell_completion") if getattr(args, flag, None)]
    if len(modes) > 1:
        fail(f"only one of --run, --multirun, --cfg, --info, --shell-completion can be given (got {', '.join(modes)})")
    passthrough = ("help", "hydra_help", "info", "version", "shell_completion", "config_name", "config_dir",
                   "config_path", "experimental_rerun")
    if any(getattr(args, flag, None) for flag in passthrough):
        return
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            jobs = _job_overrides(list(args.overrides), bool(args.multirun))
        except OverrideParseException as e:
            fail(f"bad override: {_hydra_error_line(e)}")
        # Every distinct value of every swept key gets composed, plus the whole product when it is small.
        selected = jobs if len(jobs) <= PREFLIGHT_MAX_JOBS else [
            next(job for job in jobs if entry in job) for entry in sorted({e for job in jobs for e in job})]
        seen = set()
        for job in selected:
            key = tuple(job)
            if key in seen:
                continue
            seen.add(key)
            try:
                cfg = compose(config_name="config", overrides=job)
            except (MissingConfigException, ConfigCompositionException, OverrideParseException) as e:
                fail(_unknown_key_line(e, job, compose) or _hydra_error_line(e))
            except OmegaConfBaseException as e:
                fail(str(e).splitlines()[0])
            try:
                validate(cfg, check_files=not args.cfg)  # --cfg only prints: no data needed
            except ConfigError as e:
                fail(str(e))
            except OmegaConfBaseException as e:  # e.g. an interpolation to a key that does not exist
                key = getattr(e, "full_key", None)
                fail(f"{key}: {str(e).splitlines()[0]}" if key else str(e).splitlines()[0])
        if not args.cfg:  # Hydra creates the output folder before kdbench runs: its place must take one
            try:
                hydra_cfg = compose(config_name="config", overrides=jobs[0], return_hydra_config=True).hydra
                key = "hydra.sweep.dir" if args.multirun else "hydra.run.dir"
                check_output_place(Path(str(hydra_cfg.sweep.dir if args.multirun else hydra_cfg.run.dir)), key)
            except ConfigError as e:
                fail(str(e))


def check_output_place(folder: Path, key: str) -> None:
    """ConfigError unless ``folder`` exists as a writable directory or can be created (its nearest existing
    ancestor is a writable directory); nothing is created."""
    folder = folder.expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}: {folder} cannot be created: {existing} is a file; choose another with {key}=<dir>")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {folder} cannot be written ({existing} is not writable); choose another with "
                          f"{key}=<dir>")


def validate(cfg: DictConfig, check_files: bool = True) -> None:
    """Check a composed config: types of every group, names that must exist, files that must be there."""
    from .config_schema import check_schemas
    from .engine.runtime import select_device
    from .data import check_data
    from .engine.teacher import is_ensemble, teacher_configs
    from .methods import METHODS, method_class, method_kwargs
    from .models import check_pretrained, resolve_model_name

    check_schemas(cfg)
    method_kwargs(cfg.method)
    select_device(cfg.trainer.device)
    if check_files:
        check_data(cfg.dataset)
    image_size = int(cfg.dataset.image_size)
    roles = ["student"] + (["teacher"] if method_class(cfg.method).uses_teacher else [])
    sections = [("student", cfg.student)]
    if "teacher" in roles:
        ensemble = is_ensemble(cfg)
        sections += [(f"teacher.members[{i}]" if ensemble else "teacher", teacher_cfg.teacher)
                     for i, teacher_cfg in enumerate(teacher_configs(cfg))]
    for role, section in sections:  # a checkpoint wins over pretrained, for both
        try:
            resolve_model_name(section.name, image_size)
        except ConfigError as e:
            raise ConfigError(f"{role}.name: {e}") from None
        if section.checkpoint:
            if check_files and not Path(str(section.checkpoint)).expanduser().is_file():
                raise ConfigError(f"{role}.checkpoint: no file at {section.checkpoint}")
        elif section.pretrained:
            check_pretrained(section.name, image_size, role.split(".")[0])
    if cfg.method.get("name") not in METHODS:
        raise ConfigError(f"method.name: unknown method '{cfg.method.get('name')}'; valid: {', '.join(sorted(METHODS))}")
    if check_files:
        from .engine.state import check_resume_source

        check_resume_source(cfg)


def _rank_from_env() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)


def _record_failure_before_training(cfg: DictConfig, run_dir: Path, reason: str) -> None:
    """result.json with status 'failed' for a job that stopped before its training began (no history)."""
    from omegaconf import OmegaConf

    from .results.record import build_record, utc_now, write_record

    now = utc_now()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    record = build_record(
        run_id=f"{run_dir.name}-failed", status="failed", failure=reason, started_at=now,
        config=resolved, dataset={"name": str(cfg.dataset.name)}, teacher={"name": str(cfg.teacher.name)},
        student={"name": str(cfg.student.name)}, method={"name": str(cfg.method.name), "hparams": {}},
        seed=int(cfg.seed), epochs=int(cfg.trainer.epochs), history=[], wall_time_s=0.0, images_per_s=None,
        device=str(cfg.trainer.device), precision=str(cfg.trainer.precision), run_dir=run_dir)
    write_record(run_dir, record)


def run(cfg: DictConfig) -> dict | None:
    """The Hydra task: one job = one training run in Hydra's output directory (shared by all ranks of a
    data-parallel job; rank 0 writes in it)."""
    from . import distributed
    from .engine import preemption
    from .engine.runtime import select_device
    from .engine.teacher import provide_teacher
    from .engine.trainer import CHECKPOINT_DIR, LAST, TrainingFailed, train
    from .tasks import task_of

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN and not cfg.logger.group:
        with open_dict(cfg):  # the jobs of one sweep form one W&B group, named after the sweep directory
            cfg.logger.group = Path(hc.sweep.dir).name
    try:
        validate(cfg)  # again per job: a large sweep's preflight composes only a sample of its jobs
        world = distributed.init(select_device(cfg.trainer.device).type)
    except ConfigError as e:
        fail(str(e))
    run_dir = Path(distributed.broadcast_object(str(run_dir)))
    if not world.main:
        logging.getLogger("kdbench").setLevel(logging.WARNING)
    if os.environ.get("SUBMITIT_EXECUTOR") and not cfg.get("resume") and (run_dir / CHECKPOINT_DIR / LAST).is_file():
        log.info("requeued job: resuming from %s", run_dir / CHECKPOINT_DIR / LAST)
        with open_dict(cfg):
            cfg.resume = True
    try:
        with preemption.stop_on_signals():
            try:
                record = train(cfg, run_dir, teacher_provider=provide_teacher, world=world)
            except preemption.Preempted as e:
                log.warning("%s", e)
                preemption.hand_over()  # under submitit: requeue the job (it resumes from the checkpoint)
                raise SystemExit(3) from None
    except ConfigError as e:
        if hc.mode != RunMode.MULTIRUN:
            fail(str(e))
        # In a sweep, a job whose pair cannot run this method (say) is recorded as failed; the others go on.
        _record_failure_before_training(cfg, run_dir, f"ConfigError: {e}")
        log.error("kdbench: error: %s (recorded in %s)", e, run_dir / "result.json")
        return None
    except TrainingFailed as e:
        if not (run_dir / "result.json").is_file() and world.main:  # it broke before training (the teacher's, say)
            _record_failure_before_training(cfg, run_dir, str(e))
        log.error("run failed: %s (recorded in %s)", e, run_dir / "result.json")
        if hc.mode == RunMode.MULTIRUN:
            return None  # the other jobs of the sweep go on
        raise SystemExit(1)
    finally:
        distributed.shutdown()
    m, primary = record["metrics"], task_of(cfg.dataset).primary.name
    log.info("done: last %s %.2f, best %s %.2f (epoch %d); result: %s", primary, m[f"last_{primary}"], primary,
             m[f"best_{primary}"], m["best_epoch"], run_dir / "result.json")
    return record


@hydra.main(version_base="1.3", config_path="pkg://kdbench.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def entry() -> None:
    """Console script ``kdbench``."""
    try:
        preflight(sys.argv[1:])
    except ConfigError as e:
        fail(str(e))
    if _rank_from_env() > 0 and "WORLD_SIZE" in os.environ:
        # torchrun: the other ranks use rank 0's run directory (broadcast in run()), so Hydra writes nothing
        # for them: no output subdir, no log file, and a throwaway run dir.
        import tempfile

        import atexit
        import shutil

        scratch = tempfile.mkdtemp(prefix="kdbench-rank")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", f"hydra.run.dir={scratch}"]
    hydra_main()


if __name__ == "__main__":
    entry()
