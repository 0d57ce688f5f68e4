"""Cross-model activation patching (CMAP) and the Corruption Transfer Score (CTS)."""

from patchers.cmap import CmapResult, run_cmap
from patchers.errors import PatchError
from patchers.hooks import attach, capture_last, replace_last
from patchers.metrics import step_metrics
from patchers.models import ModelPair, load_pair
from patchers.sites import SITES, Target, resolve_targets
from patchers.teacher import run_cmap_teacher_forced

__all__ = [
    "SITES",
    "CmapResult",
    "ModelPair",
    "PatchError",
    "Target",
    "attach",
    "capture_last",
    "load_pair",
    "replace_last",
    "resolve_targets",
    "run_cmap",
    "run_cmap_teacher_forced",
    "step_metrics",
]
