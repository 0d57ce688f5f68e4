"""The fast engine against the slow reference: identical tokens, metrics within 1e-4 (float32)."""

from __future__ import annotations

import math
import sys

import polars as pl
import pytest
from cmap_reference import adapter_sides, full_model_side, reference_cmap
from tiny_models import PROMPTS, perturbed, tiny_model

from patchers.cmap import run_cmap
from patchers.models import ModelPair
from patchers.sites import SITES

MAX_NEW = 6
TOL = 1e-4


def assert_matches_reference(result, clean, corrupt, site, heads=None, persistent=False, eos=()):
    steps = result.steps
    trajectories = steps.select("prompt_id", "layer", "head").unique()
    expected_count = (
        len(PROMPTS) * clean.module.config.num_hidden_layers * (len(heads) if heads else 1)
    )
    assert trajectories.height == expected_count
    for prompt_id, layer, head in trajectories.iter_rows():
        ours = (
            steps.filter(
                (pl.col("prompt_id") == prompt_id)
                & (pl.col("layer") == layer)
                & (pl.col("head").is_null() if head is None else pl.col("head") == head)
            )
            .sort("step")
            .to_dicts()
        )
        ref = reference_cmap(
            clean, corrupt, PROMPTS[prompt_id], site, layer, head, MAX_NEW, eos, persistent
        )
        where = f"{site} layer {layer} head {head} prompt {prompt_id}"
        assert [r["token_id"] for r in ours] == [r["token_id"] for r in ref], where
        for a, b in zip(ours, ref, strict=True):
            assert (a["y_clean"], a["y_corrupt"]) == (b["y_clean"], b["y_corrupt"]), where
            for key in ("dl_patch", "dl_clean", "dl_corrupt"):
                assert math.isclose(a[key], b[key], abs_tol=TOL), (where, key, a[key], b[key])
            if b["cts"] is None:
                assert a["cts"] is None, where
            else:
                assert math.isclose(a["cts"], b["cts"], rel_tol=TOL, abs_tol=TOL), (where, a, b)
        generated = result.generations.filter(
            (pl.col("prompt_id") == prompt_id)
            & (pl.col("layer") == layer)
            & (pl.col("head").is_null() if head is None else pl.col("head") == head)
        )
        assert generated["token_ids"].to_list() == [[r["token_id"] for r in ref]], where


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
        result, full_model_side(clean_model), full_model_side(corrupt_model), site, heads
    )


@pytest.mark.parametrize("site", SITES)
def test_adapter_corrupted_model_matches_reference(site, adapter_model):
    heads = [1, 2] if site == "head" else None
    pair = ModelPair(adapter_model.get_base_model(), adapter_model)
    result = run_cmap(pair, PROMPTS, site=site, heads=heads, max_new_tokens=MAX_NEW)
    clean, corrupt = adapter_sides(adapter_model)
    assert_matches_reference(result, clean, corrupt, site, heads)


@pytest.mark.parametrize("site", ["resid_pre", "attn_out", "head"])
def test_persistent_mode_matches_reference(site, clean_model, corrupt_model):
    heads = [2] if site == "head" else None
    pair = ModelPair(clean_model, corrupt_model)
    result = run_cmap(
        pair, PROMPTS, site=site, heads=heads, max_new_tokens=MAX_NEW, mode="persistent"
    )
    assert_matches_reference(
        result, full_model_side(clean_model), full_model_side(corrupt_model), site, heads, True
    )


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_other_families_match_reference(family):
    overrides = {"sliding_window": 4} if family == "mistral" else {}
    if family == "qwen2":
        overrides = {"attention_bias": True}
    clean = tiny_model(family, **overrides)
    corrupt = perturbed(clean)
    result = run_cmap(ModelPair(clean, corrupt), PROMPTS, site="attn_out", max_new_tokens=MAX_NEW)
    assert_matches_reference(result, full_model_side(clean), full_model_side(corrupt), "attn_out")


def test_eos_stops_each_trajectory(clean_model, corrupt_model):
    pair = ModelPair(clean_model, corrupt_model)
    first = run_cmap(pair, PROMPTS, max_new_tokens=MAX_NEW)
    # Stop on a token some trajectories produce mid-way, so rows leave the batch at different steps.
    tokens = first.generations["token_ids"].to_list()
    eos = (tokens[0][2],)
    result = run_cmap(pair, PROMPTS, max_new_tokens=MAX_NEW, eos_token_ids=eos)
    assert_matches_reference(
        result, full_model_side(clean_model), full_model_side(corrupt_model), "resid_post", eos=eos
    )
    stops = result.generations["stop"].to_list()
    assert "eos" in stops
    for row in result.generations.iter_rows(named=True):
        assert (row["stop"] == "eos") == (row["token_ids"][-1] in eos)


@pytest.mark.parametrize("prompts", [[[5]], [[5], [6, 7, 8]]])
def test_one_token_prompts(prompts, clean_model, corrupt_model, monkeypatch):
    """A prompt of one token has nothing to prefill; beside longer ones it is all padding."""
    monkeypatch.setattr(sys.modules[__name__], "PROMPTS", prompts)
    result = run_cmap(
        ModelPair(clean_model, corrupt_model), prompts, site="mlp_out", max_new_tokens=MAX_NEW
    )
    sides = full_model_side(clean_model), full_model_side(corrupt_model)
    assert_matches_reference(result, *sides, "mlp_out")
