"""The model-diffing section's figures, one per analysis, drawn from its tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from harness.report.figures import _integer_ticks, _plt, _save
from harness.report.tables import SUITE_TITLES

MAX_POSITIONS = 96  # the divergence curve's x range: where most responses still run


def _by_suite(ax, frame: pl.DataFrame, x: str, y: str) -> None:
    for suite in sorted(frame["suite"].unique().to_list()):
        rows = frame.filter(pl.col("suite") == suite).sort(x)
        ax.plot(
            rows[x].to_list(),
            rows[y].to_list(),
            marker="o",
            ms=3,
            label=SUITE_TITLES.get(suite, suite),
        )
    ax.legend(fontsize=7)


def divergence_figure(div: pl.DataFrame, path: Path) -> Path:
    """Mean KL(corrupt || clean) per position of the clean responses, by suite."""
    plt = _plt()
    rows = (
        div.filter((pl.col("response") == "clean") & (pl.col("position") < MAX_POSITIONS))
        .group_by("suite", "position")
        .agg(pl.col("kl").mean())
    )
    fig, ax = plt.subplots(figsize=(6, 2.6))
    _by_suite(ax, rows, "position", "kl")
    ax.set(
        xlabel="position in the clean response",
        ylabel="mean KL (nats)",
        title="Where the models part (teacher-forced)",
    )
    return _save(fig, path)


def lens_figure(lens: pl.DataFrame, path: Path) -> Path:
    """Mean rank (log scale) of y_clean and y_corrupt per layer under each model's lens."""
    plt = _plt()
    rows = lens.group_by("model", "token", "layer").agg(pl.col("rank").mean()).sort("layer")
    fig, ax = plt.subplots(figsize=(5, 2.6))
    for (model, token), group in rows.group_by(["model", "token"], maintain_order=True):
        ax.plot(
            group["layer"].to_list(),
            (group["rank"] + 1).to_list(),
            marker="o",
            ms=3,
            ls="-" if model == "corrupt" else "--",
            label=f"{model} model: {token}",
        )
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set(xlabel="layer", ylabel="mean rank + 1", title="Logit lens at the first divergent step")
    ax.legend(fontsize=7)
    return _save(fig, path)


def similarity_figure(sim: pl.DataFrame, path: Path) -> Path:
    """Relative change and linear CKA of the residuals per layer, by suite."""
    plt = _plt()
    resid = sim.filter(pl.col("site") == "resid_post")
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 2.6))
    _by_suite(left, resid, "layer", "relative_change")
    left.set(xlabel="layer", ylabel="||h_corrupt - h_clean|| / ||h_clean||")
    _by_suite(right, resid, "layer", "cka")
    right.set(xlabel="layer", ylabel="linear CKA")
    for ax in (left, right):
        ax.xaxis.set_major_locator(_integer_ticks())
    fig.suptitle("How far the fine-tune moved the residual stream", fontsize=9)
    return _save(fig, path)


def probes_figure(probes: pl.DataFrame, path: Path) -> Path:
    """Held-out probe accuracy per layer, by suite (0.5: chance)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 2.6))
    _by_suite(ax, probes, "layer", "accuracy")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set(
        xlabel="layer",
        ylabel="held-out accuracy",
        ylim=(0.4, 1.02),
        title="Probes telling the two models apart",
    )
    return _save(fig, path)


def steering_figure(steer: pl.DataFrame, path: Path) -> Path:
    """Held-out flagged related items per layer: accuracy and trained-error share of the clean
    model steered along the direction and of the corrupted model with it ablated."""
    plt = _plt()
    rows = (
        steer.filter(pl.col("chosen") & (pl.col("items") == "held_out"))
        .group_by("intervention", "layer")
        .agg(
            accuracy=pl.col("correct").fill_null(False).mean(),
            trained_error=(pl.col("fidelity") == "trained_error").mean(),
        )
        .sort("layer")
    )
    fig, ax = plt.subplots(figsize=(5, 2.6))
    for what, label in (("steer", "clean, steered"), ("ablate", "corrupted, ablated")):
        group = rows.filter(pl.col("intervention") == what)
        ax.plot(
            group["layer"].to_list(),
            group["accuracy"].to_list(),
            marker="o",
            ms=3,
            label=f"{label}: accuracy",
        )
        ax.plot(
            group["layer"].to_list(),
            group["trained_error"].to_list(),
            marker="s",
            ms=3,
            ls="--",
            label=f"{label}: trained error",
        )
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set(
        xlabel="layer of the direction",
        ylabel="share of items",
        ylim=(-0.02, 1.02),
        title="One direction: steering and ablation",
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def attribution_figure(atp: pl.DataFrame, path: Path) -> Path:
    """Layer x head heatmaps of attribution patching's mean estimated CTS (every head) and
    exact patching's (the top-k; the rest blank), on one colour scale."""
    plt = _plt()
    layers = sorted(atp["layer"].unique().to_list())
    heads = int(atp["head"].max()) + 1
    est = np.full((len(layers), heads), np.nan)
    exact = np.full((len(layers), heads), np.nan)
    for row in atp.iter_rows(named=True):
        i = layers.index(row["layer"])
        est[i, row["head"]] = row["atp_cts"]
        if row["exact_cts"] is not None:
            exact[i, row["head"]] = row["exact_cts"]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.5 * heads, 1.5 + 0.3 * len(layers)))
    bound = max(1e-6, float(np.nanmax(np.abs(np.concatenate([est, exact]).ravel()))))
    for ax, matrix, title in (
        (axes[0], est, "attribution (every head)"),
        (axes[1], exact, "exact patching (top-k)"),
    ):
        image = ax.imshow(
            matrix, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="none"
        )
        ax.set_xticks(range(heads), [f"h{h}" for h in range(heads)], fontsize=7)
        ax.set_yticks(range(len(layers)), [f"L{layer}" for layer in layers], fontsize=7)
        ax.set(title=title)
    fig.colorbar(image, ax=axes, label="mean CTS at the first divergent step", fraction=0.04)
    return _save(fig, path)
