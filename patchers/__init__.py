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

from importlib import import_module

# Loaded on first use, so that `patchers.names` (what configs validate against) needs no torch.
_HOMES = {
    "CmapResult": "cmap",
    "cmap_batches": "cmap",
    "run_cmap": "cmap",
    "PatchError": "errors",
    "attach": "hooks",
    "capture_last": "hooks",
    "replace_last": "hooks",
    "step_metrics": "metrics",
    "ModelPair": "models",
    "load_pair": "models",
    "MODES": "names",
    "SITES": "names",
    "self_test": "reference",
    "FAMILIES": "sites",
    "LAYOUTS": "sites",
    "Layout": "sites",
    "Target": "sites",
    "layout_of": "sites",
    "resolve_targets": "sites",
    "run_cmap_teacher_forced": "teacher",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'patchers' has no attribute {name!r}")
    return getattr(import_module(f"patchers.{_HOMES[name]}"), name)
