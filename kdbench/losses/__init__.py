"""Pure distillation loss functions (tensors in, scalar out; no state).

Each function mirrors its reference implementation's reduction and scaling;
see the individual docstrings for formulas and sources.
"""

from .dkd import dkd_loss
from .kd import kd_loss
from .pld import plackett_luce_loss, pld_loss

__all__ = ["kd_loss", "dkd_loss", "pld_loss", "plackett_luce_loss"]
