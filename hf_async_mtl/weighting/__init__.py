"""Task-balancing strategies for multi-task training, driven by the trainer through `WeightingMethod`.

Importing this package registers the built-in methods; look them up with `available_weightings()` and build one
with `build_weighting(name, task_names, **options)`.
"""

from __future__ import annotations

from .base import GradientWeightingMethod, WeightingMethod

# Imported for their registration side effect (and to export the classes).
from .cagrad import CAGrad
from .dwa import DynamicWeightAverage
from .equal import EqualWeighting
from .famo import FAMO
from .gradnorm import GradNorm
from .gradvac import GradVac
from .imtl_g import IMTLG
from .meta_tartan import MetaTartan
from .mgda import MGDA
from .mt_tartan import MTTartan
from .nash_mtl import NashMTL
from .pcgrad import PCGrad
from .registry import available_weightings, build_weighting, get_weighting, register_weighting
from .rlw import RandomLossWeighting
from .static import StaticWeighting
from .uncertainty import UncertaintyWeighting

__all__ = [
    "CAGrad",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FAMO",
    "GradNorm",
    "GradVac",
    "GradientWeightingMethod",
    "IMTLG",
    "MGDA",
    "MTTartan",
    "MetaTartan",
    "NashMTL",
    "PCGrad",
    "RandomLossWeighting",
    "StaticWeighting",
    "UncertaintyWeighting",
    "WeightingMethod",
    "available_weightings",
    "build_weighting",
    "get_weighting",
    "register_weighting",
]
