"""Every family in the site table against the full-re-run reference: at every site it offers,
in both modes, with a full corrupted model and with a LoRA adapter as the corrupted model.

Each family's tiny config switches on what sets it apart (tiny_models.FAMILIES): llama3 rope
scaling, sliding windows (Mistral, Gemma 2/3), softcapping and sandwich norms (Gemma 2), MoE
blocks (Qwen3-MoE), fused qkv (Phi-3), multipliers (Granite), GPT-2's layout, partial rotary
and parallel residuals (NeoX).
"""

from __future__ import annotations

import pytest
from matching import assert_matches_reference
from tiny_models import FAMILIES, PROMPTS, perturbed, tiny_model, with_adapter

from patchers.cmap import run_cmap
from patchers.models import ModelPair
from patchers.reference import adapter_sides, full_model_side
from patchers.sites import LAYOUTS, SITES

MAX_NEW = 4
HEADS = [0, 3]


def test_every_table_family_has_a_tiny_model():
    assert set(FAMILIES) == set(LAYOUTS)


@pytest.mark.parametrize("corrupted", ["full", "adapter"])
@pytest.mark.parametrize("mode", ["transient", "persistent"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_matches_reference(family, mode, corrupted):
    if corrupted == "full":
        clean = tiny_model(family)
        corrupt = perturbed(clean, scale=0.1)
        pair, sides = ModelPair(clean, corrupt), (full_model_side(clean), full_model_side(corrupt))
    else:
        peft_model = with_adapter(tiny_model(family))
        pair, sides = ModelPair(peft_model.get_base_model(), peft_model), adapter_sides(peft_model)
    changed = 0
    for site in SITES:
        heads = HEADS if site == "head" else None
        result = run_cmap(pair, PROMPTS, site=site, heads=heads, max_new_tokens=MAX_NEW, mode=mode)
        assert_matches_reference(
            result, *sides, site, PROMPTS, MAX_NEW, heads, persistent=mode == "persistent"
        )
        steps = result.steps
        changed += int((steps["y_clean"] != steps["y_corrupt"]).sum())
    assert changed > 0  # the corruption shows: CTS is defined somewhere, not only null
