"""Model factory (CIFAR zoo in timm's registry, or any timm model), feature taps and checkpoint loading."""

from .factory import check_pretrained, create_model, resolve_model_name, zoo_names
from .checkpoint import load_checkpoint
from .outputs import ModelOutput, run_model, supports

__all__ = ["check_pretrained", "create_model", "resolve_model_name", "zoo_names", "load_checkpoint", "ModelOutput", "run_model", "supports"]
