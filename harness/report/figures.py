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


def _label(kind: str | None, suite: str, site: str) -> str:
    what = f"{SUITE_TITLES.get(suite, suite)} ({site})"
    return what if kind is None else f"{what}, {kind}"


def _float(series: pl.Series) -> np.ndarray:
    return series.cast(pl.Float64).to_numpy(allow_copy=True).astype(float)


def patched_accuracy_figure(by_layer: pl.DataFrame, path: Path):
    """Patched accuracy per layer with 95 % intervals; flagged solid, controls dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    colours: dict[tuple[str, str], str] = {}
    for (site, kind, suite), group in by_layer.group_by(
        "site", "kind", "suite", maintain_order=True
    ):
        g = group.sort("layer")
        layers = g["layer"].to_numpy()
        colour = colours.get((suite, site))
        (line,) = ax.plot(
            layers,
            _float(g["accuracy"]),
            "o-" if kind == "flagged" else "s--",
            ms=3,
            label=_label(kind, suite, site),
            color=colour,
        )
        colours[(suite, site)] = line.get_color()
        ax.fill_between(
            layers, _float(g["ci_low"]), _float(g["ci_high"]), color=line.get_color(), alpha=0.15
        )
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(
        xlabel="patched layer",
        ylabel="patched accuracy",
        ylim=(-0.02, 1.02),
        title="Patched accuracy by layer (95 % Wilson intervals over prompts)",
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(_integer_ticks())
    return _save(fig, path)


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def cts_by_layer_figure(layer_table: pl.DataFrame, path: Path):
    """Mean CTS per layer with its 95 % interval (top) and the defined fraction (bottom)."""
    plt = _plt()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    keys = ["kind", "suite", "site"] if "kind" in layer_table.columns else ["suite", "site"]
    for key, group in layer_table.group_by(keys, maintain_order=True):
        kind, suite, site = key if len(keys) == 3 else (None, *key)
        g = group.sort("layer")
        layers = g["layer"].to_numpy()
        style = "s--" if kind == "control" else "o-"
        (line,) = top.plot(
            layers, _float(g["mean_cts"]), style, label=_label(kind, suite, site), lw=1.5, ms=3
        )
        top.fill_between(
            layers, _float(g["ci_low"]), _float(g["ci_high"]), color=line.get_color(), alpha=0.2
        )
        bottom.plot(layers, g["defined_fraction"].to_numpy(), style, color=line.get_color(), ms=3)
    top.axhline(0, color="grey", lw=0.8)
    top.axhline(1, color="grey", lw=0.8, ls=":")
    top.set(ylabel="mean CTS (defined steps)", title="Corruption transfer by layer")
    top.legend(fontsize=7)
    bottom.set(xlabel="patched layer", ylabel="CTS defined", ylim=(0, 1.05))
    bottom.xaxis.set_major_locator(_integer_ticks())
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    return _save(fig, path)


def cts_summary_matrix(layer_table: pl.DataFrame) -> tuple[list[str], list[int], np.ndarray]:
    """Columns (kind, suite, site), rows (layer), mean CTS (NaN where none is defined)."""
    keyed = layer_table.with_columns(
        pl.format("{} {} ({})", "kind", "suite", "site").alias("column")
    ).sort(pl.col("kind") != "flagged", "suite", "site", "layer")
    columns = keyed["column"].unique(maintain_order=True).to_list()
    layers = sorted(keyed["layer"].unique().to_list())
    matrix = np.full((len(layers), len(columns)), np.nan)
    for column, layer, value in keyed.select("column", "layer", "mean_cts").iter_rows():
        if value is not None:
            matrix[layers.index(layer), columns.index(column)] = value
    return columns, layers, matrix


def cts_heatmap_figure(layer_table: pl.DataFrame, path: Path):
    """Mean CTS by layer (rows) for each kind x suite x site (columns); grey: none defined."""
    plt = _plt()
    columns, layers, matrix = cts_summary_matrix(layer_table)
    fig, ax = plt.subplots(figsize=(2 + 1.1 * len(columns), 1.2 + 0.22 * len(layers)))
    ax.set_facecolor(UNDEFINED_GREY)
    image = ax.imshow(
        np.clip(matrix, *CTS_RANGE),
        aspect="auto",
        cmap="RdBu_r",
        vmin=CTS_RANGE[0],
        vmax=CTS_RANGE[1],
        interpolation="none",
    )
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers)), [f"L{layer}" for layer in layers], fontsize=7)
    ax.set(ylabel="patched layer", title="Mean CTS over defined steps")
    fig.colorbar(image, ax=ax, label="mean CTS (grey: undefined)", fraction=0.04)
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
