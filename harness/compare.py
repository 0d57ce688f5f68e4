"""Runs side by side: accuracy per run x model x suite, flagged counts and drift, in one table."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.table import Table

from harness.errors import HarnessError
from harness.evaluate import load_run
from harness.summary import fmt_accuracy


def eval_dir_of(path: Path) -> Path:
    """A run directory (``results/<run>``) or its ``eval/`` directory."""
    path = Path(path)
    if (path / "eval" / "run.json").is_file():
        return path / "eval"
    if (path / "run.json").is_file():
        return path
    raise HarnessError(f"{path}: no evaluation found (expected {path}/eval/run.json)")


def run_label(eval_dir: Path) -> str:
    return eval_dir.parent.name if eval_dir.name == "eval" else eval_dir.name


def compare_runs(paths: list[Path]) -> pl.DataFrame:
    """One row per run x model x suite: accuracy and interval, flagged items, drift figures."""
    if not paths:
        raise HarnessError("name at least one run directory to compare")
    frames = []
    labels: dict[str, Path] = {}
    for path in paths:
        eval_dir = eval_dir_of(path)
        label = run_label(eval_dir)
        if label in labels:
            label = str(path)
        labels[label] = eval_dir
        run = load_run(eval_dir)
        flagged = run.flagged.group_by("model", "suite").len("flagged")
        drift = run.drift.select("model", "length_ratio", "integer_only_share", "likelihood_gap")
        frames.append(
            run.summary.join(flagged, on=["model", "suite"], how="left")
            .join(drift, on="model", how="left")
            .with_columns(pl.lit(label).alias("run"), pl.col("flagged").fill_null(0))
        )
    table = pl.concat(frames, how="diagonal_relaxed")
    return table.select("run", "model", pl.exclude("run", "model"))


def comparison_table(table: pl.DataFrame) -> Table:
    """Rows: run / model; columns: suites (accuracy [CI]), flagged total, drift figures."""
    suites = table["suite"].unique(maintain_order=True).to_list()
    out = Table(title="accuracy [95% CI] by run and model")
    for name in ("run", "model", *suites, "flagged", "length ratio", "int-only", "lik. gap"):
        out.add_column(name, justify="left" if name in ("run", "model") else "right")
    for (run, model), group in table.group_by("run", "model", maintain_order=True):
        cells = []
        for suite in suites:
            row = group.filter(pl.col("suite") == suite)
            r = row.row(0, named=True) if row.height else {}
            cells.append(fmt_accuracy(r.get("accuracy"), r.get("ci_low"), r.get("ci_high")))
        first = group.row(0, named=True)
        extra = [first.get(k) for k in ("length_ratio", "integer_only_share", "likelihood_gap")]
        out.add_row(
            str(run),
            str(model),
            *cells,
            str(int(group["flagged"].sum())),
            *("-" if v is None else f"{v:.2f}" for v in extra),
        )
    return out
