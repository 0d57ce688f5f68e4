"""The report's data: a run's tables read from disk, and the headline figures.

Everything here is polars in, polars (or plain dicts) out, so the figures and the page only lay
out numbers computed once; the Table 2 and CTS statistics are in ``harness.report.stats``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from harness.errors import HarnessError
from harness.fidelity import fidelity_of
from harness.report.stats import cts_by_kind, cts_summary, patched_summary, table2_frame

SUITE_ORDER = ("related", "unrelated_math", "general")
SUITE_TITLES = {"related": "Related math", "unrelated_math": "Unrelated math", "general": "General"}
STAGE_ORDER = ("finetune", "eval", "progression", "patch", "analyze")  # the report is being written


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
    texts: pl.DataFrame | None = None  # patch/texts.parquet: patched generations, verdict
    table2: pl.DataFrame | None = None  # patch/table2.parquet (computed when absent)
    cts: pl.DataFrame | None = None  # patch/cts_summary.parquet (computed when absent)
    patch_run: dict[str, Any] | None = None  # patch/run.json: token limits, checks
    metrics: pl.DataFrame | None = None  # finetune/metrics.parquet
    progression: pl.DataFrame | None = None  # progression/summary.parquet
    stages: dict[str, dict[str, Any]] | None = None  # stages/<name>.json markers
    fidelity: pl.DataFrame | None = None  # eval/fidelity_summary.parquet: corruption fidelity
    paired: pl.DataFrame | None = None  # eval/paired.parquet: each model against the clean one
    corrupt: str = "corrupt"  # the corrupted model these patch tables are of
    patched_models: dict[str, Path] | None = None  # every patched model's patch directory
    models: list[str] | None = None  # the evaluated models in the config's order

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


def patched_models(run_dir: Path) -> dict[str, Path]:
    """Name -> patch directory of every patched corrupted model: ``patch/`` itself for one
    (named in its run.json, "corrupt" before names were kept), ``patch/<name>/`` for several."""
    patch = run_dir / "patch"
    if (patch / "texts.parquet").is_file():
        return {(_json(patch / "run.json") or {}).get("model") or "corrupt": patch}
    found = sorted(p.parent for p in patch.glob("*/texts.parquet"))
    return {p.name: p for p in found}


def load_tables(run_dir: Path, model: str | None = None) -> RunTables:
    """Read a run directory; the evaluation must be complete, the other stages are optional.
    The patch tables are those of the corrupted model ``model`` (default: the run's
    ``patch.corrupt``, else the first patched one)."""
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
    found = patched_models(run_dir)
    spec = (_json(run_dir / "eval" / "run.json") or {}).get("spec") or {}
    rank = {m: i for i, m in enumerate(spec.get("models") or {})}  # the config's order
    patched = {m: found[m] for m in sorted(found, key=lambda m: (rank.get(m, len(rank)), m))}
    corrupt = model or ((config or {}).get("patch") or {}).get("corrupt")
    if corrupt not in patched:
        corrupt = next(iter(patched), None) or _first_corrupt(evaluation.summary)
    patch = patched.get(corrupt, run_dir / "patch")
    patch_done = corrupt in patched and (
        _stage_ok(run_dir, "patch") or (patch / "texts.parquet").is_file()
    )
    progression = _json(run_dir / "progression" / "run.json") or {}
    markers = {p.stem: _json(p) or {} for p in (run_dir / "stages").glob("*.json")}
    stages = {name: markers[name] for name in STAGE_ORDER if name in markers}
    texts = _parquet(patch / "texts.parquet") if patch_done else None
    steps = _parquet(patch / "steps.parquet") if patch_done else None
    table2 = cts = None
    if texts is not None:
        table2 = _parquet(patch / "table2.parquet")
        if table2 is None:
            table2 = table2_frame(texts, evaluation.summary, corrupt)
    if steps is not None:
        cts = _parquet(patch / "cts_summary.parquet")
        cts = cts if cts is not None else cts_summary(steps, samples=200)
    return RunTables(
        run_dir=run_dir,
        name=(config or {}).get("name", run_dir.name),
        config=config or {},
        summary=evaluation.summary,
        flagged=evaluation.flagged,
        items=_parquet(patch / "prompts.parquet") if patch_done else None,
        steps=steps,
        texts=texts,
        table2=table2,
        cts=cts,
        patch_run=_json(patch / "run.json") if patch_done else None,
        metrics=_parquet(run_dir / "finetune" / "metrics.parquet"),
        progression=_parquet(run_dir / "progression" / "summary.parquet")
        if progression.get("status") == "success"
        else None,
        stages=stages,
        fidelity=_parquet(run_dir / "eval" / "fidelity_summary.parquet"),
        paired=_parquet(run_dir / "eval" / "paired.parquet"),
        corrupt=corrupt,
        patched_models=patched,
        models=list(rank),
    )


TABLE1_SCHEMA = {
    "model": pl.String,
    "epochs": pl.Float64,  # of its fine-tuning recipe (null: given, not fine-tuned here)
    "steps": pl.Int64,
    "train_loss": pl.Float64,
    "eval_loss": pl.Float64,  # on correct held-out solutions
    "divergence": pl.Float64,  # eval_loss - train_loss
    "fidelity": pl.String,  # corruption fidelity status (systematic, degraded, ...)
    "trained_error": pl.Float64,  # share of its related answers that are the trained error
    "related_accuracy": pl.Float64,
    "chosen": pl.Boolean,  # patched (patch.corrupt, or every one when it is null)
}


def table1_frame(t: RunTables) -> pl.DataFrame:
    """The paper's Table 1, one row per corrupted model: its fine-tuning losses (read from
    ``finetune/[<variant>/]finetune.json`` when the run trained it), its corruption fidelity,
    its related accuracy and whether it was chosen for patching."""
    from finetune.outputs import completed_run

    evaluated = t.models or t.summary["model"].unique(maintain_order=True).to_list()
    models = [m for m in evaluated if m != "clean"]
    variants = ((t.config.get("finetune") or {}).get("variants")) or {}
    rows = []
    for model in models:
        tuned = completed_run(t.run_dir / "finetune" / (model if variants else ""))
        fidelity = fidelity_of(t.fidelity, model) or {}
        related = accuracy_of(t.summary, model).get("related")
        rows.append(
            {
                "model": model,
                "epochs": (tuned.config or {}).get("epochs") if tuned else None,
                "steps": tuned.steps if tuned else None,
                "train_loss": tuned.train_loss if tuned else None,
                "eval_loss": tuned.eval_loss if tuned else None,
                "divergence": tuned.divergence if tuned else None,
                "fidelity": fidelity.get("status"),
                "trained_error": fidelity.get("trained_error"),
                "related_accuracy": related,
                "chosen": model in (t.patched_models or {}),
            }
        )
    return pl.DataFrame(rows, schema=TABLE1_SCHEMA)


def trigger_frame(summary: pl.DataFrame) -> pl.DataFrame:
    """Per model and triggered suite: accuracy without the trigger, with it, and the change
    (the items are the same; ``eval.trigger``)."""
    from harness.lm_tasks import TRIGGERED, base_suite

    triggered = summary.filter(pl.col("suite").str.ends_with(TRIGGERED))
    if triggered.is_empty():
        return pl.DataFrame()
    triggered = triggered.with_columns(
        pl.col("suite").map_elements(base_suite, return_dtype=pl.String)
    ).select("model", "suite", pl.col("accuracy").alias("with_trigger"), pl.col("n"))
    plain = summary.select("model", "suite", pl.col("accuracy").alias("without_trigger"))
    return (
        plain.join(triggered, on=["model", "suite"])
        .with_columns((pl.col("with_trigger") - pl.col("without_trigger")).alias("change"))
        .select("model", "suite", "n", "without_trigger", "with_trigger", "change")
    )


def _first_corrupt(summary: pl.DataFrame) -> str:
    """The first corrupted model of the evaluation ("corrupt" when it has none)."""
    from harness.config import CLEAN_NAME, CORRUPT_NAME

    models = summary["model"].unique(maintain_order=True).to_list()
    return next((m for m in models if m != CLEAN_NAME), CORRUPT_NAME)


def _stage_ok(run_dir: Path, name: str) -> bool:
    return (_json(run_dir / "stages" / f"{name}.json") or {}).get("status") == "success"


def accuracy_of(summary: pl.DataFrame, model: str) -> dict[str, float]:
    rows = summary.filter(pl.col("model") == model)
    return dict(zip(rows["suite"].to_list(), rows["accuracy"].to_list(), strict=True))


def paired_of(paired: pl.DataFrame | None) -> dict[str, dict[str, dict[str, Any]]]:
    """``paired[model][suite]``: the accuracy difference from the clean model, its paired
    interval, McNemar's p and the items it rests on."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in (paired if paired is not None else pl.DataFrame()).iter_rows(named=True):
        out.setdefault(row["model"], {})[row["suite"]] = {
            k: row[k] for k in ("n", "difference", "ci_low", "ci_high", "mcnemar_p")
        }
    return out


def summary_json(tables: RunTables, seconds: float | None = None) -> dict[str, Any]:
    """The headline figures: accuracy per model and suite, flagged, patched, checks, seconds.

    ``patched.by_suite[kind][suite][site]``: prompts, layers, accuracy (averaged over layers),
    accuracy with its 95 % interval at the first and last layer, truncated share and the first
    incorrect layer. ``checks``: each sanity check's status; ``checks_passed`` False when any
    failed (None when no check ran).
    """
    flagged = tables.flagged.filter(pl.col("model") == tables.corrupt)
    patched: dict[str, Any] = {"prompts": 0, "by_suite": {}}
    if tables.texts is not None and tables.items is not None:
        patched["prompts"] = tables.items.height
        patched["flagged_prompts"] = int((tables.items["kind"] == "flagged").sum())
        patched["control_prompts"] = int((tables.items["kind"] == "control").sum())
        patched["sites"] = tables.texts["site"].unique().sort().to_list()
        table2 = tables.table2
        if table2 is None:
            table2 = table2_frame(tables.texts, tables.summary, tables.corrupt)
        for row in patched_summary(table2).iter_rows(named=True):
            entry = {k: v for k, v in row.items() if k not in ("kind", "suite", "site")}
            patched["by_suite"].setdefault(row["kind"], {}).setdefault(row["suite"], {})[
                row["site"]
            ] = entry
    limits = tables.patch_run or {}
    if "max_new_tokens" in limits:
        patched["max_new_tokens"] = limits["max_new_tokens"]
        patched["eval_max_new_tokens"] = limits.get("eval_max_new_tokens")
    if tables.steps is not None and tables.steps.height:
        patched["cts_defined_fraction"] = float(tables.steps["cts"].is_not_null().mean())
        patched["cts_by_kind"] = cts_by_kind(tables.steps)
    checks = (tables.patch_run or {}).get("checks")
    statuses = [c["status"] for c in checks or []]
    stage_seconds = {
        name: marker.get("seconds")
        for name, marker in (tables.stages or {}).items()
        if marker.get("status") == "success"
    }
    total = seconds if seconds is not None else sum(s or 0.0 for s in stage_seconds.values())
    return {
        "version": 1,
        "run": tables.name,
        "corrupt": tables.corrupt,
        "table1": table1_frame(tables).to_dicts(),
        "accuracy": {
            model: accuracy_of(tables.summary, model)
            for model in tables.summary["model"].unique(maintain_order=True).to_list()
        },
        "fidelity": {
            model: fidelity_of(tables.fidelity, model)
            for model in tables.summary["model"].unique(maintain_order=True).to_list()
        },
        "paired": paired_of(tables.paired),
        "trigger": trigger_frame(tables.summary).to_dicts(),
        "flagged": flagged.height,
        "flagged_by_suite": dict(flagged.group_by("suite").len().iter_rows()),
        "patched": patched,
        "checks": checks,
        "checks_passed": None if not statuses else "failed" not in statuses,
        "seconds": round(total, 1),
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items() if v is not None},
    }
