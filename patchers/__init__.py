"""Cross-model activation patching (CMAP) and the Corruption Transfer Score (CTS).

pair = load_pair("models/clean", "models/corrupt-adapter", dtype="float32", device="cpu")
result = run_cmap(pair, prompts_ids, site="resid_post", layers=None, max_new_tokens=128,
                  eos_token_ids=[eos_id])
result.steps        # polars: one row per trajectory and step (columns: patchers.metrics)
result.generations  # polars: the patched model's token_ids per trajectory

Any Hugging Face causal LM: the families of `LAYOUTS` are tested against the full-re-run
reference (`patchers.reference`); any other is laid out from its module names and self-tested
before a run. Sites are read and written with `attach(model, site, layer, fn)`.
"""

from patchers.cmap import MODES, CmapResult, run_cmap
from patchers.errors import PatchError
from patchers.hooks import attach, capture_last, replace_last
from patchers.metrics import step_metrics
from patchers.models import ModelPair, load_pair
from patchers.reference import self_test
from patchers.sites import FAMILIES, LAYOUTS, SITES, Layout, Target, layout_of, resolve_targets
from patchers.teacher import run_cmap_teacher_forced

__all__ = [
    "FAMILIES",
    "LAYOUTS",
    "MODES",
    "SITES",
    "CmapResult",
    "Layout",
    "ModelPair",
    "PatchError",
    "Target",
    "attach",
    "capture_last",
    "layout_of",
    "load_pair",
    "replace_last",
    "resolve_targets",
    "run_cmap",
    "run_cmap_teacher_forced",
    "self_test",
    "step_metrics",
]
