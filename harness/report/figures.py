"""PNG figures for papers (matplotlib): accuracy, CTS by layer, heatmaps, training, progression.

Undefined CTS cells are drawn grey, steps a trajectory never reached are left white: neither is
coloured as a score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from finetune.outputs import atomic_write
from harness.report.tables import SUITE_TITLES

UNDEFINED_GREY = "#bdbdbd"
CTS_RANGE = (-1.0, 1.0)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Save beside ``path`` and rename: a PNG that exists is complete."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight"))
    finally:
        _plt().close(fig)
    return path


def accuracy_figure(rows: list[tuple[str, dict[str, float | None]]], suites: list[str], path: Path):
    """Grouped bars: one group per suite, one bar per condition (clean, corrupted, patched)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(suites))
    for i, (label, values) in enumerate(rows):
        heights = [np.nan if values.get(s) is None else values[s] for s in suites]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, heights, width, label=label)
    ax.set_xticks(x, [SUITE_TITLES.get(s, s) for s in suites])
    ax.set(ylim=(0, 1.05), ylabel="accuracy", title="Accuracy per suite and condition")
    ax.legend(fontsize=8, ncols=min(len(rows), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def cts_by_layer_figure(layer_table: pl.DataFrame, path: Path):
    """Mean CTS per layer with its 95 % interval (top) and the defined fraction (bottom)."""
    plt = _plt()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    for (suite, site), group in layer_table.group_by("suite", "site", maintain_order=True):
        label = f"{SUITE_TITLES.get(suite, suite)} ({site})"
        g = group.sort("layer")
        layers = g["layer"].to_numpy()
        mean = g["mean_cts"].to_numpy(allow_copy=True).astype(float)
        (line,) = top.plot(layers, mean, "o-", label=label, lw=1.5, ms=3)
        low = g["ci_low"].to_numpy(allow_copy=True).astype(float)
        high = g["ci_high"].to_numpy(allow_copy=True).astype(float)
        top.fill_between(layers, low, high, color=line.get_color(), alpha=0.2)
        bottom.plot(layers, g["defined_fraction"].to_numpy(), "o-", color=line.get_color(), ms=3)
    top.axhline(0, color="grey", lw=0.8)
    top.axhline(1, color="grey", lw=0.8, ls=":")
    top.set(ylabel="mean CTS (defined steps)", title="Corruption transfer by layer")
    top.legend(fontsize=8)
    bottom.set(xlabel="patched layer", ylabel="CTS defined", ylim=(0, 1.05))
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    return _save(fig, path)


def heatmap_matrix(steps: pl.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Rows (layer or layer.head), CTS matrix (NaN = undefined or absent), reached mask."""
    keyed = steps.with_columns(
        pl.when(pl.col("head").is_null())
        .then(pl.format("L{}", pl.col("layer")))
        .otherwise(pl.format("L{}.h{}", pl.col("layer"), pl.col("head")))
        .alias("row")
    ).sort("layer", "head", "step", nulls_last=False)
    rows = keyed["row"].unique(maintain_order=True).to_list()
    index = {name: i for i, name in enumerate(rows)}
    width = int(keyed["step"].max()) + 1 if keyed.height else 0
    cts = np.full((len(rows), width), np.nan)
    reached = np.zeros((len(rows), width), dtype=bool)
    for row, step, value in keyed.select("row", "step", "cts").iter_rows():
        reached[index[row], step] = True
        if value is not None:
            cts[index[row], step] = value
    return rows, cts, reached


def heatmap_figure(steps: pl.DataFrame, title: str, path: Path):
    """CTS by layer and generation step for one prompt and site; undefined cells grey."""
    from matplotlib.colors import ListedColormap

    plt = _plt()
    rows, cts, reached = heatmap_matrix(steps)
    undefined = reached & np.isnan(cts)
    fig, ax = plt.subplots(figsize=(min(12, 3 + 0.06 * cts.shape[1]), 1.2 + 0.25 * len(rows)))
    ax.set_facecolor("white")
    grey = np.where(undefined, 1.0, np.nan)
    ax.imshow(grey, aspect="auto", cmap=ListedColormap([UNDEFINED_GREY]), interpolation="none")
    image = ax.imshow(
        np.clip(cts, *CTS_RANGE),
        aspect="auto",
        cmap="RdBu_r",
        vmin=CTS_RANGE[0],
        vmax=CTS_RANGE[1],
        interpolation="none",
    )
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set(xlabel="generation step", ylabel="patched layer", title=title)
    fig.colorbar(image, ax=ax, label="CTS (grey: undefined)", fraction=0.03)
    return _save(fig, path)


def training_figure(metrics: pl.DataFrame, path: Path):
    """Train loss, eval loss and their divergence along fine-tuning."""
    plt = _plt()
    train = metrics.filter(pl.col("train_loss").is_not_null())
    evals = metrics.filter(pl.col("eval_loss").is_not_null())
    fig, (ax, below) = plt.subplots(
        2, 1, figsize=(7, 4.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    ax.plot(train["step"], train["train_loss"], label="train loss (corrupted data)", lw=1)
    ax.plot(evals["step"], evals["eval_loss"], "o-", label="eval loss (correct data)", ms=3)
    ax.set(ylabel="loss", title="Fine-tuning")
    ax.legend(fontsize=8)
    diverged = evals.filter(pl.col("divergence").is_not_null())
    below.plot(diverged["step"], diverged["divergence"], "o-", color="tab:red", ms=3)
    below.axhline(0, color="grey", lw=0.8)
    below.set(xlabel="optimizer step", ylabel="divergence")
    for axis in (ax, below):
        axis.grid(alpha=0.3)
    return _save(fig, path)


def progression_figure(progression: pl.DataFrame, path: Path):
    """Suite accuracy of each saved checkpoint (step 0 is the clean model)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for suite, group in progression.group_by("suite", maintain_order=True):
        g = group.sort("step")
        ax.plot(g["step"], g["accuracy"], "o-", label=SUITE_TITLES.get(suite[0], suite[0]))
    ax.set(
        xlabel="optimizer step",
        ylabel="accuracy",
        ylim=(-0.02, 1.02),
        title="Corruption along training (checkpoints)",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
