"""The fast engine against the slow reference: identical tokens, metrics within 1e-4 (float32)."""

from __future__ import annotations

import pytest
from matching import assert_matches_reference
from tiny_models import PROMPTS

from patchers.cmap import run_cmap
from patchers.models import ModelPair
from patchers.reference import adapter_sides, full_model_side
from patchers.sites import SITES

MAX_NEW = 6


@pytest.mark.parametrize("site", SITES)
def test_full_corrupted_model_matches_reference(site, clean_model, corrupt_model):
    heads = [0, 3] if site == "head" else None
    result = run_cmap(
        ModelPair(clean_model, corrupt_model),
        PROMPTS,
        site=site,
        heads=heads,
        max_new_tokens=MAX_NEW,
    )
    assert_matches_reference(
        result,
        full_model_side(clean_model),
        full_model_side(corrupt_model),
        site,
        PROMPTS,
        MAX_NEW,
        heads,
    )


@pytest.mark.parametrize("site", SITES)
def test_adapter_corrupted_model_matches_reference(site, adapter_model):
    heads = [1, 2] if site == "head" else None
    pair = ModelPair(adapter_model.get_base_model(), adapter_model)
    result = run_cmap(pair, PROMPTS, site=site, heads=heads, max_new_tokens=MAX_NEW)
    clean, corrupt = adapter_sides(adapter_model)
    assert_matches_reference(result, clean, corrupt, site, PROMPTS, MAX_NEW, heads)


@pytest.mark.parametrize("site", ["resid_pre", "attn_out", "head"])
def test_persistent_mode_matches_reference(site, clean_model, corrupt_model):
    heads = [2] if site == "head" else None
    pair = ModelPair(clean_model, corrupt_model)
    result = run_cmap(
        pair, PROMPTS, site=site, heads=heads, max_new_tokens=MAX_NEW, mode="persistent"
    )
    assert_matches_reference(
        result,
        full_model_side(clean_model),
        full_model_side(corrupt_model),
        site,
        PROMPTS,
        MAX_NEW,
        heads,
        True,
    )


def test_eos_stops_each_trajectory(clean_model, corrupt_model):
    pair = ModelPair(clean_model, corrupt_model)
    first = run_cmap(pair, PROMPTS, max_new_tokens=MAX_NEW)
    # Stop on a token some trajectories produce mid-way, so rows leave the batch at different steps.
    tokens = first.generations["token_ids"].to_list()
    eos = (tokens[0][2],)
    result = run_cmap(pair, PROMPTS, max_new_tokens=MAX_NEW, eos_token_ids=eos)
    assert_matches_reference(
        result,
        full_model_side(clean_model),
        full_model_side(corrupt_model),
        "resid_post",
        PROMPTS,
        MAX_NEW,
        eos=eos,
    )
    stops = result.generations["stop"].to_list()
    assert "eos" in stops
    for row in result.generations.iter_rows(named=True):
        assert (row["stop"] == "eos") == (row["token_ids"][-1] in eos)


@pytest.mark.parametrize("prompts", [[[5]], [[5], [6, 7, 8]]])
def test_one_token_prompts(prompts, clean_model, corrupt_model):
    """A prompt of one token has nothing to prefill; beside longer ones it is all padding."""
    result = run_cmap(
        ModelPair(clean_model, corrupt_model), prompts, site="mlp_out", max_new_tokens=MAX_NEW
    )
    sides = full_model_side(clean_model), full_model_side(corrupt_model)
    assert_matches_reference(result, *sides, "mlp_out", prompts, MAX_NEW)
