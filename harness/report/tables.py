"""The report's data: a run's tables read from disk and the analyses drawn from them.

Everything here is polars in, polars (or plain dicts) out, so the figures and the page only lay
out numbers computed once. CTS is null where it is undefined (clean and corrupted models agree
on the next token); means are over defined steps only, with the defined fraction beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from harness.errors import HarnessError
from harness.summary import bootstrap_ci

SUITE_ORDER = ("related", "unrelated_math", "general")
SUITE_TITLES = {"related": "Related math", "unrelated_math": "Unrelated math", "general": "General"}
INCORRECT_BELOW = 0.5  # a layer "turns answers incorrect" when patched accuracy falls below this
HIGH_CTS = 0.8
STAGE_ORDER = ("finetune", "eval", "progression", "patch")  # the report is being written


@dataclass
class RunTables:
    """A run's tables as the stages wrote them; None where a stage did not run."""

    run_dir: Path
    name: str
    config: dict[str, Any]
    summary: pl.DataFrame  # eval: model, suite, n, accuracy, ci_low, ci_high
    flagged: pl.DataFrame  # eval: clean right, corrupted wrong
    items: pl.DataFrame | None = None  # patch/prompts.parquet: the patched items
    steps: pl.DataFrame | None = None  # patch/steps.parquet: CTS per layer and step
    texts: pl.DataFrame | None = None  # patch/texts.parquet: patched generations, correct
    metrics: pl.DataFrame | None = None  # finetune/metrics.parquet
    progression: pl.DataFrame | None = None  # progression/summary.parquet
    stages: dict[str, dict[str, Any]] | None = None  # stages/<name>.json markers

    @property
    def suites(self) -> list[str]:
        present = set(self.summary["suite"].to_list())
        return [s for s in SUITE_ORDER if s in present] + sorted(present - set(SUITE_ORDER))


def _parquet(path: Path) -> pl.DataFrame | None:
    return pl.read_parquet(path) if path.is_file() else None


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_tables(run_dir: Path) -> RunTables:
    """Read a run directory; the evaluation must be complete, the other stages are optional."""
    import yaml

    from harness.evaluate import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HarnessError(f"{run_dir}: no such run directory")
    if not (run_dir / "eval" / "run.json").is_file():
        raise HarnessError(f"{run_dir}: no evaluation to report (expected {run_dir}/eval/run.json)")
    evaluation = load_run(run_dir / "eval")
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    patch_done = _stage_ok(run_dir, "patch") or (run_dir / "patch" / "texts.parquet").is_file()
    progression = _json(run_dir / "progression" / "run.json") or {}
    markers = {p.stem: _json(p) or {} for p in (run_dir / "stages").glob("*.json")}
    stages = {name: markers[name] for name in STAGE_ORDER if name in markers}
    return RunTables(
        run_dir=run_dir,
        name=(config or {}).get("name", run_dir.name),
        config=config or {},
        summary=evaluation.summary,
        flagged=evaluation.flagged,
        items=_parquet(run_dir / "patch" / "prompts.parquet") if patch_done else None,
        steps=_parquet(run_dir / "patch" / "steps.parquet") if patch_done else None,
        texts=_parquet(run_dir / "patch" / "texts.parquet") if patch_done else None,
        metrics=_parquet(run_dir / "finetune" / "metrics.parquet"),
        progression=_parquet(run_dir / "progression" / "summary.parquet")
        if progression.get("status") == "success"
        else None,
        stages=stages,
    )


def _stage_ok(run_dir: Path, name: str) -> bool:
    return (_json(run_dir / "stages" / f"{name}.json") or {}).get("status") == "success"


def accuracy_of(summary: pl.DataFrame, model: str) -> dict[str, float]:
    rows = summary.filter(pl.col("model") == model)
    return dict(zip(rows["suite"].to_list(), rows["accuracy"].to_list(), strict=True))


def patched_by_layer(texts: pl.DataFrame) -> pl.DataFrame:
    """Patched accuracy per kind x suite x site x layer (x head): n prompts, share correct."""
    keys = ["kind", "suite", "site", "layer", "head"]
    return (
        texts.group_by(keys)
        .agg(pl.len().alias("n"), pl.col("correct").cast(pl.Float64).mean().alias("accuracy"))
        .sort(keys, nulls_last=False)
    )


def first_incorrect_layer(layers: list[int], accuracy: list[float]) -> int | None:
    """The first layer from which patched accuracy stays below ``INCORRECT_BELOW`` to the end."""
    first = None
    for layer, acc in sorted(zip(layers, accuracy, strict=True)):
        first = (layer if first is None else first) if acc < INCORRECT_BELOW else None
    return first


def patched_summary(texts: pl.DataFrame) -> pl.DataFrame:
    """Per kind x suite x site: prompts, accuracy over all patched layers, first incorrect layer."""
    by_layer = patched_by_layer(texts.filter(pl.col("head").is_null()))
    rows = []
    for (kind, suite, site), group in by_layer.group_by(
        "kind", "suite", "site", maintain_order=True
    ):
        sub = texts.filter(
            (pl.col("kind") == kind) & (pl.col("suite") == suite) & (pl.col("site") == site)
        )
        rows.append(
            {
                "kind": kind,
                "suite": suite,
                "site": site,
                "prompts": sub["prompt_id"].n_unique(),
                "layers": group.height,
                "accuracy": float(sub["correct"].cast(pl.Float64).mean()),
                "first_incorrect_layer": first_incorrect_layer(
                    group["layer"].to_list(), group["accuracy"].to_list()
                ),
            }
        )
    schema = {
        "kind": pl.String,
        "suite": pl.String,
        "site": pl.String,
        "prompts": pl.Int64,
        "layers": pl.Int64,
        "accuracy": pl.Float64,
        "first_incorrect_layer": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema).sort("site", "kind", "suite")


def layer_cts(steps: pl.DataFrame, samples: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Mean CTS per suite x site x layer over defined steps, 95 % bootstrap CI, defined share."""
    rows = []
    keys = ["suite", "site", "layer"]
    for key, group in steps.group_by(keys, maintain_order=True):
        defined = group["cts"].drop_nulls().to_numpy()
        low, high = bootstrap_ci(defined, samples, seed)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "steps": group.height,
                "defined": int(defined.size),
                "defined_fraction": defined.size / group.height if group.height else 0.0,
                "mean_cts": float(defined.mean()) if defined.size else None,
                "ci_low": low,
                "ci_high": high,
                "median_cts": float(np.median(defined)) if defined.size else None,
            }
        )
    schema = {
        "suite": pl.String,
        "site": pl.String,
        "layer": pl.Int64,
        "steps": pl.Int64,
        "defined": pl.Int64,
        "defined_fraction": pl.Float64,
        "mean_cts": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "median_cts": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema).sort(keys)


def top_tokens(steps: pl.DataFrame, k: int = 15, min_count: int = 3) -> pl.DataFrame:
    """Generated tokens ranked by mean CTS over their defined steps (all prompts and layers)."""
    defined = steps.filter(pl.col("cts").is_not_null()).with_columns(
        pl.col("token").str.strip_chars().alias("token")
    )
    defined = defined.filter(pl.col("token") != "")
    if defined.is_empty():
        return pl.DataFrame(
            schema={
                "token": pl.String,
                "n": pl.Int64,
                "mean_cts": pl.Float64,
                "high_share": pl.Float64,
                "best_layer": pl.Int64,
                "suites": pl.String,
            }
        )
    per_layer = (
        defined.group_by("token", "layer")
        .agg(pl.col("cts").mean().alias("m"))
        .sort("m", descending=True)
        .group_by("token", maintain_order=True)
        .agg(pl.col("layer").first().alias("best_layer"))
    )
    table = (
        defined.group_by("token")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("cts").mean().alias("mean_cts"),
            (pl.col("cts") >= HIGH_CTS).mean().alias("high_share"),
            pl.col("suite").unique().sort().str.join(", ").alias("suites"),
        )
        .join(per_layer, on="token")
    )
    enough = table.filter(pl.col("n") >= min_count)
    table = enough if enough.height else table
    return (
        table.sort(["mean_cts", "n"], descending=True)
        .head(k)
        .select("token", "n", "mean_cts", "high_share", "best_layer", "suites")
    )


def summary_json(tables: RunTables, seconds: float | None = None) -> dict[str, Any]:
    """The headline figures: accuracy per model and suite, flagged, patched, seconds."""
    flagged = tables.flagged.filter(pl.col("model") == "corrupt")
    patched: dict[str, Any] = {"prompts": 0, "by_suite": {}}
    if tables.texts is not None and tables.items is not None:
        patched["prompts"] = tables.items.height
        patched["flagged_prompts"] = int((tables.items["kind"] == "flagged").sum())
        patched["sites"] = tables.texts["site"].unique().sort().to_list()
        for row in patched_summary(tables.texts).iter_rows(named=True):
            entry = {k: row[k] for k in ("prompts", "layers", "accuracy", "first_incorrect_layer")}
            patched["by_suite"].setdefault(row["kind"], {}).setdefault(row["suite"], {})[
                row["site"]
            ] = entry
    if tables.steps is not None and tables.steps.height:
        patched["cts_defined_fraction"] = float(tables.steps["cts"].is_not_null().mean())
        patched["cts_mean"] = tables.steps["cts"].mean()
    stage_seconds = {
        name: marker.get("seconds")
        for name, marker in (tables.stages or {}).items()
        if marker.get("status") == "success"
    }
    total = seconds if seconds is not None else sum(s or 0.0 for s in stage_seconds.values())
    return {
        "version": 1,
        "run": tables.name,
        "accuracy": {
            model: accuracy_of(tables.summary, model)
            for model in tables.summary["model"].unique(maintain_order=True).to_list()
        },
        "flagged": flagged.height,
        "flagged_by_suite": dict(flagged.group_by("suite").len().iter_rows()),
        "patched": patched,
        "seconds": round(total, 1),
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items() if v is not None},
    }
