"""Robust distillation on clean inputs: teacher targets, their manipulations, the losses.

``logitscope.distill(teacher=..., transform=..., k=...)`` trains a student: the package is
callable (it forwards to :func:`logitscope.distill.distillation.distill`), so the public verb and
the subpackage share one name without shadowing each other.
"""

import sys
import types
from typing import Any

from logitscope.distill.losses import LOSS_KINDS, distill_loss
from logitscope.distill.targets import BN_MODES, TargetProvenance, teacher_targets
from logitscope.distill.transforms import (
    VALID_NAMES,
    TransformSpec,
    apply_transform,
    apply_transforms,
    format_transforms,
    parse_transform,
    parse_transforms,
)

__all__ = [
    "BN_MODES",
    "LOSS_KINDS",
    "VALID_NAMES",
    "TargetProvenance",
    "TransformSpec",
    "apply_transform",
    "apply_transforms",
    "distill_loss",
    "format_transforms",
    "parse_transform",
    "parse_transforms",
    "teacher_targets",
]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from logitscope.distill.distillation import distill

        return distill(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
