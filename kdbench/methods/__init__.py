"""Distillation methods: one file per method, each registered by name in ``METHODS``.

Adding a method is one file here (a ``Method`` subclass decorated with ``@register_method``) plus one config
in conf/method/; the engine needs no change.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .base import METHODS, Batch, BuildContext, Method, Progress, register_method

# Importing every module of this package registers its methods: a new method file needs no edit here.
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base",) and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

_RESERVED = {"_target_", "name"}


def _kind(annotation: Any) -> type | None:
    if isinstance(annotation, str):
        return {"float": float, "int": int, "bool": bool, "str": str}.get(annotation)
    return annotation if isinstance(annotation, type) else None


def numeric_hparams(cls: type[Method]) -> list[str]:
    """The constructor arguments of ``cls`` annotated ``int`` or ``float``: each has a range (``Method.range_of``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and _kind(p.annotation) in (int, float)]


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    kind = _kind(annotation)
    if kind is None or value is None:
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"method.{key}: expected {kind.__name__}, got {value!r} ({type(value).__name__})")


def method_class(cfg: DictConfig) -> type[Method]:
    target = cfg.get("_target_")
    if target is None:
        raise ConfigError(f"method: no _target_ given; valid method names: {', '.join(sorted(METHODS))}")
    try:
        cls = get_class(target)
    except Exception:
        raise ConfigError(f"method._target_: cannot import '{target}'; valid method names: {', '.join(sorted(METHODS))}") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConfigError(f"method._target_: '{target}' is not a kdbench Method")
    return cls


def method_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The method's hyper-parameters from its config, checked against the constructor's signature, types and
    declared ranges."""
    from ..config_schema import range_error

    cls = method_class(cfg)
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}
    values = OmegaConf.to_container(cfg, resolve=True)
    kwargs = {}
    for key, value in values.items():
        if key in _RESERVED:
            continue
        if key not in params:
            raise ConfigError(f"method.{key}: unknown hyper-parameter for {cfg.get('name', target_name(cfg))}; "
                              f"valid: {', '.join(params) or '(none)'}")
        kwargs[key] = _coerce(key, value, params[key].annotation)
        spec = cls.range_of(key) if _kind(params[key].annotation) in (int, float) else None
        if spec and (message := range_error(f"method.{key}", kwargs[key], spec)):
            raise ConfigError(message)
    return kwargs


def target_name(cfg: DictConfig) -> str:
    return str(cfg.get("_target_", "?")).rsplit(".", 1)[-1]


# The method a model trains with on its task alone (a teacher for the store; the baseline row of every table).
TASK_ONLY = "ce"


def task_only_config() -> DictConfig:
    """The method config of ``TASK_ONLY``, as shipped in conf/method/."""
    from importlib.resources import files

    return OmegaConf.create((files("kdbench.conf") / "method" / f"{TASK_ONLY}.yaml").read_text())


def build_method(cfg: DictConfig) -> Method:
    """Instantiate the method a ``method`` config names, with its (validated) hyper-parameters."""
    return method_class(cfg)(**method_kwargs(cfg))


__all__ = ["METHODS", "TASK_ONLY", "task_only_config", "Batch", "BuildContext", "Method", "Progress", "register_method", "build_method", "method_class", "method_kwargs",
           "numeric_hparams"]
