"""Model-diffing analyses beside CMAP, on the patcher's own hooks (`patchers.hooks.attach`).

- `activations`: record a site's activations during a model's own forward; the logit lens.
- `divergence`: per-token KL(P_corrupt || P_clean) and top-1 disagreement, teacher-forced.
- `similarity`: linear CKA, mean cosine and relative change of the two models' activations.
- `probes`: logistic-regression probes telling the two models' activations apart.
- `directions`: mean difference directions, steering and ablation (context managers).
- `attribution`: attribution patching of every head, and the exact single-step patch it estimates.

Each takes `patchers.reference.Side`s (a model and how to get its logits), so a LoRA pair's
clean side is the adapter switched off, exactly as in the patcher.
"""
