"""The analyze stage's tables: their schemas, and the headline numbers drawn from them."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

RELATED = "related"

DIVERGENCE_SCHEMA = {
    "prompt_id": pl.Int64,
    "kind": pl.String,
    "suite": pl.String,
    "task": pl.String,
    "response": pl.String,
    "position": pl.Int64,
    "token_id": pl.Int64,
    "kl": pl.Float64,
    "disagree": pl.Boolean,
}
LENS_SCHEMA = {
    "prompt_id": pl.Int64,
    "kind": pl.String,
    "suite": pl.String,
    "task": pl.String,
    "model": pl.String,
    "layer": pl.Int64,
    "token": pl.String,
    "rank": pl.Int64,
    "prob": pl.Float64,
}
SIMILARITY_SCHEMA = {
    "suite": pl.String,
    "site": pl.String,
    "layer": pl.Int64,
    "head": pl.Int64,
    "cka": pl.Float64,
    "cosine": pl.Float64,
    "relative_change": pl.Float64,
}
PROBE_SCHEMA = {"suite": pl.String, "layer": pl.Int64, "accuracy": pl.Float64, "items": pl.Int64}
DIRECTION_SCHEMA = {
    "layer": pl.Int64,
    "norm": pl.Float64,
    "top_tokens": pl.List(pl.String),
    "fit_items": pl.Int64,
}
STEERING_SCHEMA = {
    "prompt_id": pl.Int64,
    "kind": pl.String,
    "suite": pl.String,
    "task": pl.String,
    "verdict": pl.String,
    "correct": pl.Boolean,
    "fidelity": pl.String,
    "layer": pl.Int64,
    "intervention": pl.String,
    "alpha": pl.Float64,
    "items": pl.String,
    "chosen": pl.Boolean,
}
ATTRIBUTION_SCHEMA = {
    "layer": pl.Int64,
    "head": pl.Int64,
    "atp_cts": pl.Float64,
    "exact_cts": pl.Float64,
    "steps": pl.Int64,  # the steps AtP ran at (CTS defined)
    "exact_steps": pl.Int64,  # of those, where the engine's exact CTS is defined too
}


def headline(tables: dict[str, pl.DataFrame]) -> dict[str, Any]:
    """The numbers ``summary.json`` and the report lead with."""
    out: dict[str, Any] = {}
    if (div := tables.get("divergence")) is not None and div.height:
        by_suite = div.group_by("suite").agg(pl.col("kl").mean())
        out["mean_kl"] = dict(zip(by_suite["suite"], by_suite["kl"], strict=True))
    if (lens := tables.get("lens")) is not None and lens.height:
        appears = (
            lens.filter(
                (pl.col("model") == "corrupt")
                & (pl.col("token") == "y_corrupt")
                & (pl.col("rank") == 0)
            )
            .group_by("suite", "prompt_id")
            .agg(pl.col("layer").min())
            .group_by("suite")
            .agg(pl.col("layer").median())
        )
        out["corrupt_answer_layer"] = dict(zip(appears["suite"], appears["layer"], strict=True))
    if (probes := tables.get("probes")) is not None and probes.height:
        best = probes.group_by("suite").agg(pl.col("accuracy").max())
        out["best_probe_accuracy"] = dict(zip(best["suite"], best["accuracy"], strict=True))
    if (steer := tables.get("steering")) is not None and steer.height:
        out["directions"] = _direction_headline(steer)
    if (atp := tables.get("attribution")) is not None and atp.height:
        exact = atp.filter(pl.col("exact_cts").is_not_null())
        top = atp.sort(pl.col("atp_cts").abs(), descending=True).row(0, named=True)
        out["top_head"] = {"layer": top["layer"], "head": top["head"], "atp_cts": top["atp_cts"]}
        if exact.height >= 3:
            from scipy.stats import spearmanr

            rho = spearmanr(exact["atp_cts"], exact["exact_cts"]).statistic
            out["attribution_spearman"] = None if np.isnan(rho) else float(rho)
    return out


def _direction_headline(steer: pl.DataFrame) -> dict[str, Any]:
    """Per intervention, the layer whose direction moves the direction's own items most at
    its chosen alpha (the "search" rows: choosing on the scored items would report the best
    of many noisy shares), and what it does to the held-out flagged related items (each
    clean-right and corrupted-wrong): steering the clean model along it `transfers` the share
    it answers with the trained error (its accuracy beside it: damage is not transfer);
    ablating it from the corrupted model `repairs` the share it gets right."""
    chosen = steer.filter(pl.col("chosen") & (pl.col("suite") == RELATED))

    def shares(items: str) -> pl.DataFrame:
        return (
            chosen.filter(pl.col("items") == items)
            .group_by("intervention", "layer", "alpha")
            .agg(
                right=pl.col("correct").fill_null(False).mean(),
                trained_error=(pl.col("fidelity") == "trained_error").mean(),
                n=pl.len(),
            )
        )

    search, held = shares("search"), shares("held_out")
    out = {}
    for what, share, key in (
        ("steer", pl.col("trained_error"), "transfers"),
        ("ablate", pl.col("right"), "repairs"),
    ):
        picked = search.filter(pl.col("intervention") == what).with_columns(share=share)
        if not picked.height:
            continue
        layer = picked.sort(["share", "layer"], descending=[True, False])["layer"][0]
        rows = held.filter((pl.col("intervention") == what) & (pl.col("layer") == layer))
        if not rows.height:
            continue
        row = rows.with_columns(share=share).row(0, named=True)
        out[what] = {"layer": layer, "alpha": row["alpha"], key: row["share"],
                     "accuracy": row["right"], "trained_error": row["trained_error"],
                     "items": row["n"]}  # fmt: skip
    return out
