"""Interactive figures (plotly) for the HTML page; plotly.js is inlined once by the page.

Heatmaps draw two traces: a grey layer where CTS is undefined and the CTS layer above it with
gaps there, so an undefined step reads as grey (and says so on hover), never as a score of 0.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from harness.report.figures import CTS_RANGE, UNDEFINED_GREY, heatmap_matrix
from harness.report.tables import SUITE_ORDER, SUITE_TITLES

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
SUITE_RANK = {suite: i for i, suite in enumerate(SUITE_ORDER)}


def _go():
    import plotly.graph_objects as go

    return go


def heatmap(steps: pl.DataFrame, title: str):
    """CTS by patched layer (rows) and generation step (columns) for one prompt and site."""
    go = _go()
    rows, cts, reached = heatmap_matrix(steps)
    tokens = np.full(cts.shape, "", dtype=object)
    labels = np.full(cts.shape, "", dtype=object)
    index = {name: i for i, name in enumerate(rows)}
    keyed = steps.with_columns(
        pl.when(pl.col("head").is_null())
        .then(pl.format("L{}", pl.col("layer")))
        .otherwise(pl.format("L{}.h{}", pl.col("layer"), pl.col("head")))
        .alias("row")
    )
    for row, step, token, value in keyed.select("row", "step", "token", "cts").iter_rows():
        tokens[index[row], step] = repr(token)[1:-1] if token is not None else "?"
        labels[index[row], step] = "undefined (same argmax)" if value is None else f"{value:.3f}"
    undefined = np.where(reached & np.isnan(cts), 1.0, np.nan)
    custom = np.dstack([tokens, labels])
    hover = (
        "layer %{y}, step %{x}<br>token: %{customdata[0]}<br>CTS: %{customdata[1]}<extra></extra>"
    )
    x = list(range(cts.shape[1]))
    grey = go.Heatmap(
        z=_nulls(undefined),
        x=x,
        y=rows,
        customdata=custom,
        hovertemplate=hover,
        colorscale=[[0, UNDEFINED_GREY], [1, UNDEFINED_GREY]],
        showscale=False,
        hoverongaps=False,
        name="undefined",
    )
    score = go.Heatmap(
        z=_nulls(np.clip(cts, *CTS_RANGE)),
        x=x,
        y=rows,
        customdata=custom,
        hovertemplate=hover,
        colorscale="RdBu_r",
        zmin=CTS_RANGE[0],
        zmax=CTS_RANGE[1],
        zmid=0,
        hoverongaps=False,
        colorbar={"title": {"text": "CTS"}, "thickness": 12},
        name="CTS",
    )
    fig = go.Figure([grey, score])
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        xaxis_title="generation step",
        yaxis_title="patched layer",
        plot_bgcolor="white",
        height=max(220, 90 + 18 * len(rows)),
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
    )
    fig.update_yaxes(type="category")
    return fig


def _nulls(matrix: np.ndarray) -> list[list[float | None]]:
    """NaN -> None: plotly leaves a gap (shows what is underneath) instead of a colour."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]


def cts_by_layer(layer_table: pl.DataFrame):
    """Mean CTS per layer with 95 % intervals; the defined fraction in a panel below."""
    go = _go()
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06
    )
    ordered = layer_table.with_columns(
        pl.col("suite").replace_strict(SUITE_RANK, default=9).alias("_o")
    )
    groups = ordered.sort("_o", "site").group_by("suite", "site", maintain_order=True)
    for i, ((suite, site), group) in enumerate(groups):
        g = group.sort("layer")
        name = f"{SUITE_TITLES.get(suite, suite)} ({site})"
        color = PALETTE[i % len(PALETTE)]
        mean = g["mean_cts"].to_list()
        upper = [
            h - m if h is not None and m is not None else None
            for h, m in zip(g["ci_high"].to_list(), mean, strict=True)
        ]
        lower = [
            m - lo if lo is not None and m is not None else None
            for lo, m in zip(g["ci_low"].to_list(), mean, strict=True)
        ]
        custom = np.column_stack(
            [g["defined_fraction"].to_numpy(), g["defined"].to_numpy(), g["steps"].to_numpy()]
        )
        fig.add_trace(
            go.Scatter(
                x=g["layer"].to_list(),
                y=mean,
                name=name,
                legendgroup=name,
                mode="lines+markers",
                line={"color": color},
                error_y={"type": "data", "symmetric": False, "array": upper, "arrayminus": lower},
                customdata=custom,
                hovertemplate="layer %{x}: mean CTS %{y:.3f}<br>defined on %{customdata[0]:.0%}"
                " (%{customdata[1]} of %{customdata[2]} steps)<extra>" + name + "</extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=g["layer"].to_list(),
                y=g["defined_fraction"].to_list(),
                name=name,
                legendgroup=name,
                showlegend=False,
                mode="lines+markers",
                line={"color": color},
            ),
            row=2,
            col=1,
        )
    fig.update_yaxes(title_text="mean CTS", row=1, col=1)
    fig.update_yaxes(title_text="defined", range=[0, 1.05], tickformat=".0%", row=2, col=1)
    fig.update_xaxes(title_text="patched layer", row=2, col=1)
    fig.update_xaxes(tickmode="linear", dtick=max(1, layer_table["layer"].n_unique() // 16))
    fig.update_layout(height=460, margin={"l": 60, "r": 20, "t": 30, "b": 40})
    return fig


def training(metrics: pl.DataFrame):
    go = _go()
    from plotly.subplots import make_subplots

    train = metrics.filter(pl.col("train_loss").is_not_null())
    evals = metrics.filter(pl.col("eval_loss").is_not_null())
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35])
    fig.add_trace(
        go.Scatter(
            x=train["step"].to_list(),
            y=train["train_loss"].to_list(),
            name="train loss (corrupted data)",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=evals["step"].to_list(),
            y=evals["eval_loss"].to_list(),
            name="eval loss (correct data)",
            mode="lines+markers",
        ),
        row=1,
        col=1,
    )
    diverged = evals.filter(pl.col("divergence").is_not_null())
    fig.add_trace(
        go.Scatter(
            x=diverged["step"].to_list(),
            y=diverged["divergence"].to_list(),
            name="divergence (eval - train)",
            mode="lines+markers",
        ),
        row=2,
        col=1,
    )
    fig.update_xaxes(title_text="optimizer step", row=2, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="divergence", row=2, col=1)
    fig.update_layout(height=420, margin={"l": 60, "r": 20, "t": 30, "b": 40})
    return fig


def progression(table: pl.DataFrame):
    go = _go()
    fig = go.Figure()
    for suite, group in table.group_by("suite", maintain_order=True):
        g = group.sort("step")
        fig.add_trace(
            go.Scatter(
                x=g["step"].to_list(),
                y=g["accuracy"].to_list(),
                mode="lines+markers",
                name=SUITE_TITLES.get(suite[0], suite[0]),
            )
        )
    fig.update_layout(
        xaxis_title="optimizer step (0: clean model)",
        yaxis_title="accuracy",
        yaxis_range=[-0.02, 1.02],
        height=340,
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
    )
    return fig
