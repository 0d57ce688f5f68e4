"""Invariants of CMAP that hold whatever the weights, and teacher forcing against decoding."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch
from tiny_models import PROMPTS

from patchers.cmap import run_cmap
from patchers.models import ModelPair
from patchers.sites import SITES
from patchers.teacher import run_cmap_teacher_forced

MAX_NEW = 5


@pytest.mark.parametrize("site", SITES)
def test_identity_patch_leaves_logits_unchanged(site, clean_model):
    """Clean patched into clean: the patched model is the clean model."""
    heads = [1] if site == "head" else None
    result = run_cmap(
        ModelPair(clean_model, clean_model), PROMPTS, site=site, heads=heads, max_new_tokens=MAX_NEW
    )
    steps = result.steps
    # Every target of a prompt keeps the clean tokens: they share one context throughout.
    assert result.rows == {"patched": steps.height, "context": len(PROMPTS) * MAX_NEW}
    assert (steps["token_id"] == steps["y_clean"]).all()
    assert (steps["y_clean"] == steps["y_corrupt"]).all()
    assert steps["cts"].null_count() == steps.height  # undefined everywhere, never 0
    for column in ("dl_patch", "dl_clean", "kl_patch", "kl_clean", "kl_transfer"):
        assert steps[column].abs().max() < 1e-5, column
    # ...and the tokens are the clean model's own greedy continuation.
    ids = torch.tensor([PROMPTS[0]])
    greedy = clean_model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False)[0, ids.shape[1] :]
    first = steps.filter((pl.col("prompt_id") == 0) & (pl.col("layer") == 0)).sort("step")
    assert first["token_id"].to_list() == greedy.tolist()


def test_last_layer_resid_post_reproduces_corrupted_logits(adapter_model):
    """With norm and LM head shared (a LoRA adapter on the layers), patching the output of the
    last layer hands the clean model the corrupted model's final state."""
    pair = ModelPair(adapter_model.get_base_model(), adapter_model)
    last = adapter_model.config.num_hidden_layers - 1
    steps = run_cmap(pair, PROMPTS, site="resid_post", layers=[last], max_new_tokens=MAX_NEW).steps
    assert (steps["token_id"] == steps["y_corrupt"]).all()
    assert ((steps["dl_patch"] - steps["dl_corrupt"]).abs() < 1e-4).all()
    assert steps["kl_patch"].abs().max() < 1e-5
    defined = steps.filter(pl.col("cts").is_not_null())
    assert defined.height > 0
    assert ((defined["cts"] - 1).abs() < 1e-4).all()


def test_cts_is_null_exactly_where_the_argmaxes_agree(clean_model, corrupt_model):
    steps = run_cmap(ModelPair(clean_model, corrupt_model), PROMPTS, max_new_tokens=MAX_NEW).steps
    agree = steps["y_clean"] == steps["y_corrupt"]
    assert 0 < agree.sum() < steps.height  # both kinds of step occur in this fixture
    assert (steps["cts"].is_null() == agree).all()
    assert steps["kl_transfer"].null_count() == 0  # the continuous measure is always defined
    assert not steps["kl_transfer"].is_nan().any()


@pytest.mark.parametrize("mode", ["transient", "persistent"])
@pytest.mark.parametrize("site", ["resid_pre", "mlp_out", "head"])
def test_teacher_forced_equals_decoding_on_its_own_tokens(site, mode, adapter_model):
    """Forcing the patched model's own generation reproduces every step of the decoding run."""
    pair = ModelPair(adapter_model.get_base_model(), adapter_model)
    heads = [0, 2] if site == "head" else None
    decoded = run_cmap(pair, PROMPTS, site=site, heads=heads, max_new_tokens=MAX_NEW, mode=mode)
    for row in decoded.generations.iter_rows(named=True):
        layer, head = row["layer"], row["head"]
        forced = run_cmap_teacher_forced(
            pair,
            [PROMPTS[row["prompt_id"]]],
            [row["token_ids"]],
            site=site,
            layers=[layer],
            heads=None if head is None else [head],
            mode=mode,
        ).sort("step")
        ours = decoded.steps.filter(
            (pl.col("prompt_id") == row["prompt_id"])
            & (pl.col("layer") == layer)
            & (pl.col("head").is_null() if head is None else pl.col("head") == head)
        ).sort("step")
        assert forced["y_patch"].to_list() == ours["token_id"].to_list()
        assert forced["token_id"].to_list() == ours["token_id"].to_list()
        for column in ("y_clean", "y_corrupt"):
            assert forced[column].to_list() == ours[column].to_list()
        for column in ("dl_patch", "dl_clean", "dl_corrupt", "kl_patch"):
            assert ((forced[column] - ours[column]).abs() < 1e-4).all(), column
        for a, b in zip(forced["cts"].to_list(), ours["cts"].to_list(), strict=True):
            assert (a is None) == (b is None)
            assert a is None or math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4)


def test_teacher_forced_batches_all_targets_in_one_pass(clean_model, corrupt_model):
    """All layers of a prompt at once give the same rows as one layer at a time."""
    pair = ModelPair(clean_model, corrupt_model)
    continuation = [[3, 9, 27, 81], [2, 4]]
    together = run_cmap_teacher_forced(pair, PROMPTS, continuation, site="attn_out")
    assert together.height == sum(len(c) for c in continuation) * 4
    for layer in range(4):
        alone = run_cmap_teacher_forced(
            pair, PROMPTS, continuation, site="attn_out", layers=[layer]
        )
        mine = together.filter(pl.col("layer") == layer)
        assert mine["y_patch"].to_list() == alone["y_patch"].to_list()
        assert ((mine["dl_patch"] - alone["dl_patch"]).abs() < 1e-4).all()
