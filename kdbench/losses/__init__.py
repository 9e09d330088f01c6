"""Pure distillation loss functions (tensors in, scalar out; no state), one file per method.

Each function mirrors its reference implementation's reduction and scaling; see the individual docstrings for
formulas and sources. Every public ``*_loss`` function of every module in this package is exported here.
"""

import importlib
import pkgutil

__all__: list[str] = []
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", [n for n in vars(_module) if n.endswith("_loss") and not n.startswith("_")]):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
del _info, _module, _name
