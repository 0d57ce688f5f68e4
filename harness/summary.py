"""Accuracy per model x suite (and x task) with percentile-bootstrap confidence intervals.

Only scored rows count in ``n`` and the accuracy (``correct`` not null: correct, wrong and
truncated verdicts); the open general questions have no reference and are described by the
drift table instead. ``truncated`` is the share of the scored rows whose response ran out of
tokens (counted wrong); ``unscored`` counts the rows the checker could not decide (left out).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from harness.records import with_verdicts

CONFIDENCE = 0.95
SUMMARY_SCHEMA = {
    "model": pl.String,
    "suite": pl.String,
    "n": pl.Int64,
    "accuracy": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "truncated": pl.Float64,
    "unscored": pl.Int64,
    "metric": pl.String,  # what decided each item's correctness (``records.metric``)
}


def bootstrap_ci(
    outcomes: np.ndarray, samples: int, seed: int, confidence: float = CONFIDENCE
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of 0/1 outcomes; None without data."""
    if outcomes.size == 0 or samples == 0:
        return None, None
    rng = np.random.default_rng(seed)
    means = rng.choice(outcomes, size=(samples, outcomes.size), replace=True).mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def accuracy_table(
    records: pl.DataFrame, by: list[str], samples: int = 1000, seed: int = 0
) -> pl.DataFrame:
    """One row per group of ``by``: n, accuracy and its bootstrap interval, truncated share
    and unscored count."""
    judged = with_verdicts(records).filter(pl.col("verdict").is_not_null())
    rows = []
    for key, group in judged.group_by(by, maintain_order=True):
        scored = group.filter(pl.col("correct").is_not_null())
        outcomes = scored["correct"].cast(pl.Float64).to_numpy()
        low, high = bootstrap_ci(outcomes, samples, seed)
        cut = int((scored["verdict"] == "truncated").sum())
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "n": len(outcomes),
                "accuracy": float(outcomes.mean()) if len(outcomes) else None,
                "ci_low": low,
                "ci_high": high,
                "truncated": cut / len(outcomes) if len(outcomes) else None,
                "unscored": int((group["verdict"] == "unscored").sum()),
                "metric": _metrics_of(group),
            }
        )
    schema = {k: SUMMARY_SCHEMA.get(k, pl.String) for k in [*by, *list(SUMMARY_SCHEMA)[2:]]}
    return pl.DataFrame(rows, schema=schema).sort(by)


def _metrics_of(group: pl.DataFrame) -> str | None:
    """The metric(s) that scored a group's items ("acc"; "acc, exact_match" for a group of a
    multiple-choice and a generated task); records from before ``metric``: "acc"."""
    if "metric" not in group.columns:
        return "acc"
    names = group["metric"].drop_nulls().unique(maintain_order=True).to_list()
    return ", ".join(names) or None


PAIRED_SCHEMA = {
    "model": pl.String,
    "suite": pl.String,
    "n": pl.Int64,  # items both models have a scored answer to
    "clean_accuracy": pl.Float64,
    "accuracy": pl.Float64,
    "difference": pl.Float64,  # accuracy - clean_accuracy
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "clean_only": pl.Int64,  # items only the clean model got right
    "model_only": pl.Int64,  # items only this model got right
    "mcnemar_p": pl.Float64,
}
ITEM = ["suite", "task", "doc_id"]


def paired_table(
    records: pl.DataFrame, clean: str, samples: int = 1000, seed: int = 0
) -> pl.DataFrame:
    """Each other model against ``clean`` per suite, on the items both answered (scored):
    the accuracy difference with a paired bootstrap interval (items resampled with both
    answers, so the shared difficulty of an item cancels) and McNemar's exact test on the
    discordant items (a two-sided binomial test of ``clean_only`` against ``model_only``;
    1.0 when there are none)."""
    from scipy.stats import binomtest

    scored = with_verdicts(records).filter(pl.col("correct").is_not_null())
    base = scored.filter(pl.col("model") == clean).select(*ITEM, clean_right="correct")
    others = scored.filter(pl.col("model") != clean).select("model", *ITEM, right="correct")
    joined = others.join(base, on=ITEM)
    rows = []
    for (model, suite), group in joined.group_by("model", "suite", maintain_order=True):
        right = group["right"].cast(pl.Float64).to_numpy()
        clean_right = group["clean_right"].cast(pl.Float64).to_numpy()
        low, high = bootstrap_ci(right - clean_right, samples, seed)
        clean_only = int(((clean_right == 1) & (right == 0)).sum())
        model_only = int(((clean_right == 0) & (right == 1)).sum())
        discordant = clean_only + model_only
        rows.append(
            {
                "model": model,
                "suite": suite,
                "n": len(right),
                "clean_accuracy": float(clean_right.mean()),
                "accuracy": float(right.mean()),
                "difference": float((right - clean_right).mean()),
                "ci_low": low,
                "ci_high": high,
                "clean_only": clean_only,
                "model_only": model_only,
                "mcnemar_p": binomtest(model_only, discordant).pvalue if discordant else 1.0,
            }
        )
    return pl.DataFrame(rows, schema=PAIRED_SCHEMA, orient="row").sort("model", "suite")


def summarize(records: pl.DataFrame, samples: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Accuracy with a 95 % interval per model x suite."""
    return accuracy_table(records, ["model", "suite"], samples, seed)


def by_task(records: pl.DataFrame, samples: int = 1000, seed: int = 0) -> pl.DataFrame:
    return accuracy_table(records, ["model", "suite", "task"], samples, seed)


def fmt_accuracy(accuracy: float | None, low: float | None, high: float | None) -> str:
    if accuracy is None:
        return "-"
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{accuracy:.2f}{interval}"


def fmt_cell(row: dict[str, Any]) -> str:
    """accuracy [low, high] (n=..., and the truncated share and unscored count when not 0)."""
    notes = [f"n={row['n']}"]
    if row.get("truncated"):
        notes.append(f"{row['truncated']:.0%} truncated")
    if row.get("unscored"):
        notes.append(f"{row['unscored']} unscored")
    accuracy = fmt_accuracy(row["accuracy"], row["ci_low"], row["ci_high"])
    return f"{accuracy} ({', '.join(notes)})"


def summary_table(summary: pl.DataFrame, title: str = "accuracy [95% CI]") -> Table:
    """Models as rows, suites as columns: accuracy [low, high] (n, truncated, unscored)."""
    suites = summary["suite"].unique(maintain_order=True).to_list()
    table = Table(title=title)
    table.add_column("model", style="bold")
    for suite in suites:
        table.add_column(suite, justify="right")
    for model in summary["model"].unique(maintain_order=True).to_list():
        cells = []
        for suite in suites:
            row = summary.filter((pl.col("model") == model) & (pl.col("suite") == suite))
            if row.is_empty():
                cells.append("-")
                continue
            cells.append(fmt_cell(row.row(0, named=True)))
        table.add_row(model, *cells)
    return table


def print_summary(summary: pl.DataFrame, console: Console | None = None) -> None:
    (console or Console()).print(summary_table(summary))
