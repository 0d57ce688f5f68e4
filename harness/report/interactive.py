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


def _groups(table: pl.DataFrame, keys: list[str]):
    """Groups in the page's order: flagged before control, suites as in Table 2."""
    ordered = table.with_columns(
        pl.col("suite").replace_strict(SUITE_RANK, default=9).alias("_o"),
        ((pl.col("kind") != "flagged") if "kind" in table.columns else pl.lit(False)).alias("_k"),
    )
    return ordered.sort("_k", "_o", "site").group_by(keys, maintain_order=True)


def _name(key: tuple, keys: list[str]) -> str:
    values = dict(zip(keys, key, strict=True))
    name = f"{SUITE_TITLES.get(values['suite'], values['suite'])} ({values['site']})"
    return f"{name}, {values['kind']}" if "kind" in values else name


def _error_bars(mean: list, low: list, high: list) -> dict:
    upper = [
        h - m if h is not None and m is not None else None for h, m in zip(high, mean, strict=True)
    ]
    lower = [
        m - lo if lo is not None and m is not None else None
        for lo, m in zip(low, mean, strict=True)
    ]
    return {"type": "data", "symmetric": False, "array": upper, "arrayminus": lower}


def patched_accuracy(by_layer: pl.DataFrame):
    """Patched accuracy per layer with 95 % Wilson intervals; controls dashed."""
    go = _go()
    fig = go.Figure()
    keys = ["kind", "suite", "site"]
    for i, (key, group) in enumerate(_groups(by_layer, keys)):
        g = group.sort("layer")
        name = _name(key, keys)
        mean = g["accuracy"].to_list()
        custom = np.column_stack(
            [g["n"].to_numpy(), g["truncated"].to_numpy(), g["decision"].to_numpy()]
        )
        fig.add_trace(
            go.Scatter(
                x=g["layer"].to_list(),
                y=mean,
                name=name,
                mode="lines+markers",
                line={
                    "color": PALETTE[i % len(PALETTE)],
                    "dash": "dash" if key[0] == "control" else "solid",
                },
                error_y=_error_bars(mean, g["ci_low"].to_list(), g["ci_high"].to_list()),
                customdata=custom,
                hovertemplate="layer %{x}: accuracy %{y:.2f} over %{customdata[0]} prompts"
                "<br>truncated %{customdata[1]}, %{customdata[2]}<extra>" + name + "</extra>",
            )
        )
    fig.add_hline(y=0.5, line={"color": "grey", "dash": "dot", "width": 1})
    fig.update_layout(
        xaxis_title="patched layer",
        yaxis_title="patched accuracy",
        yaxis_range=[-0.02, 1.02],
        height=380,
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
    )
    return fig


def cts_by_layer(layer_table: pl.DataFrame):
    """Mean CTS per layer with 95 % intervals; the defined fraction in a panel below."""
    go = _go()
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06
    )
    keys = ["kind", "suite", "site"] if "kind" in layer_table.columns else ["suite", "site"]
    for i, (key, group) in enumerate(_groups(layer_table, keys)):
        g = group.sort("layer")
        name = _name(key, keys)
        color = PALETTE[i % len(PALETTE)]
        dash = "dash" if "kind" in keys and key[0] == "control" else "solid"
        mean = g["mean_cts"].to_list()
        median = g["median_cts"].to_list() if "median_cts" in g.columns else [None] * g.height
        custom = np.column_stack(
            [
                g["defined_fraction"].to_numpy(),
                g["defined"].to_numpy(),
                g["steps"].to_numpy(),
                np.array(median, dtype=float),
            ]
        )
        fig.add_trace(
            go.Scatter(
                x=g["layer"].to_list(),
                y=mean,
                name=name,
                legendgroup=name,
                mode="lines+markers",
                line={"color": color, "dash": dash},
                error_y=_error_bars(mean, g["ci_low"].to_list(), g["ci_high"].to_list()),
                customdata=custom,
                hovertemplate="layer %{x}: mean CTS %{y:.3f}, median %{customdata[3]:.3f}"
                "<br>defined on %{customdata[0]:.0%} (%{customdata[1]} of %{customdata[2]} steps)"
                "<extra>" + name + "</extra>",
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
                line={"color": color, "dash": dash},
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


def cts_summary_heatmap(layer_table: pl.DataFrame):
    """Mean CTS by layer and kind x suite x site; hover: median, share >= 0.5, defined share."""
    go = _go()
    from harness.report.figures import cts_summary_matrix

    columns, layers, matrix = cts_summary_matrix(layer_table)
    hover = np.full(matrix.shape, "", dtype=object)
    keyed = layer_table.with_columns(
        pl.format("{} {} ({})", "kind", "suite", "site").alias("column")
    )
    for r in keyed.iter_rows(named=True):
        i, j = layers.index(r["layer"]), columns.index(r["column"])
        hover[i, j] = (
            f"mean {_num(r['mean_cts'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}], median "
            f"{_num(r['median_cts'])}, CTS>=0.5 on {_pct(r['high_share'])} of defined steps, "
            f"defined on {_pct(r['defined_fraction'])}, KL transfer {_num(r['mean_kl_transfer'])}"
        )
    fig = go.Figure(
        go.Heatmap(
            z=_nulls(np.clip(matrix, *CTS_RANGE)),
            x=columns,
            y=[f"L{v}" for v in layers],
            customdata=hover,
            hovertemplate="%{y}, %{x}<br>%{customdata}<extra></extra>",
            colorscale="RdBu_r",
            zmin=CTS_RANGE[0],
            zmax=CTS_RANGE[1],
            zmid=0,
            hoverongaps=False,
            colorbar={"title": {"text": "mean CTS"}, "thickness": 12},
        )
    )
    fig.update_layout(
        plot_bgcolor=UNDEFINED_GREY,
        height=max(260, 90 + 16 * len(layers)),
        margin={"l": 60, "r": 20, "t": 30, "b": 80},
    )
    fig.update_yaxes(type="category")
    return fig


def cts_head_heatmap(head_table: pl.DataFrame):
    """Mean CTS by layer (rows) and head (columns), one panel per kind (flagged first)."""
    go = _go()
    from plotly.subplots import make_subplots

    kinds = sorted(head_table["kind"].unique().to_list(), key=lambda k: k != "flagged")
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds, shared_yaxes=True)
    for c, kind in enumerate(kinds, start=1):
        pooled = (
            head_table.filter(pl.col("kind") == kind)
            .group_by("layer", "head")
            .agg(
                ((pl.col("mean_cts") * pl.col("defined")).sum() / pl.col("defined").sum()).alias(
                    "m"
                )
            )
            .sort("layer", "head")
        )
        layers = sorted(pooled["layer"].unique().to_list())
        heads = sorted(pooled["head"].unique().to_list())
        z = np.full((len(layers), len(heads)), np.nan)
        for layer, head, value in pooled.iter_rows():
            if value is not None and np.isfinite(value):
                z[layers.index(layer), heads.index(head)] = value
        fig.add_trace(
            go.Heatmap(
                z=_nulls(np.clip(z, *CTS_RANGE)),
                x=heads,
                y=[f"L{v}" for v in layers],
                colorscale="RdBu_r",
                zmin=CTS_RANGE[0],
                zmax=CTS_RANGE[1],
                zmid=0,
                showscale=c == 1,
                hoverongaps=False,
                hovertemplate="%{y} head %{x}: mean CTS %{z:.3f}<extra>" + kind + "</extra>",
            ),
            row=1,
            col=c,
        )
    fig.update_layout(
        height=max(260, 90 + 16 * head_table["layer"].n_unique()),
        plot_bgcolor=UNDEFINED_GREY,
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
    )
    return fig


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


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
