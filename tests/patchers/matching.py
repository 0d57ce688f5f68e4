"""The engine's result against the slow reference, trajectory by trajectory: identical tokens,
dl and CTS within TOL (float32), CTS null exactly where the reference's is undefined."""

from __future__ import annotations

import math

import polars as pl

from patchers.reference import reference_cmap

TOL = 1e-4


def assert_matches_reference(
    result, clean, corrupt, site, prompts, max_new, heads=None, persistent=False, eos=()
):
    steps = result.steps
    trajectories = steps.select("prompt_id", "layer", "head").unique()
    expected_count = (
        len(prompts) * clean.module.config.num_hidden_layers * (len(heads) if heads else 1)
    )
    assert trajectories.height == expected_count
    for prompt_id, layer, head in trajectories.iter_rows():
        same = (
            (pl.col("prompt_id") == prompt_id)
            & (pl.col("layer") == layer)
            & (pl.col("head").is_null() if head is None else pl.col("head") == head)
        )
        ours = steps.filter(same).sort("step").to_dicts()
        ref = reference_cmap(
            clean, corrupt, prompts[prompt_id], site, layer, head, max_new, eos, persistent
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
        generated = result.generations.filter(same)
        assert generated["token_ids"].to_list() == [[r["token_id"] for r in ref]], where
