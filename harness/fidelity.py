"""Corruption fidelity tables: every related answer classified, and a status per model.

``tasks.fidelity`` defines the classes and the status thresholds; this module applies them to
an evaluation's records, with each item's error patterns looked up by its id in the suites'
held-out data. Items without patterns (a user's own data) leave the status ``unavailable``.
"""

from __future__ import annotations

import functools

import polars as pl

from harness.endpoints import CLEAN
from harness.lm_tasks import TRIGGERED
from tasks.fidelity import CLASSES, classify, status

FIDELITY_SCHEMA = {
    "model": pl.String,
    "task": pl.String,
    "doc_id": pl.Int64,
    "item_id": pl.String,
    "fidelity": pl.String,
}
SUMMARY_SCHEMA = (
    {"model": pl.String, "task": pl.String, "n": pl.Int64}
    | {c: pl.Float64 for c in CLASSES}
    | {"status": pl.String}
)


@functools.cache
def _patterns(level: str) -> dict[str, dict[str, str]]:
    from tasks.suites import eval_problems

    return {p.id: dict(p.error_answers) for p in eval_problems(level, "related")}  # type: ignore[arg-type]


def fidelity_records(records: pl.DataFrame, level: str) -> pl.DataFrame:
    """One row per generated related answer with its fidelity class (null without patterns);
    the triggered related items (``related+trigger``, tasks ``*_triggered``) too."""
    related = records.filter(
        pl.col("suite").is_in(["related", "related" + TRIGGERED])
        & (pl.col("output_type") == "generate_until")
    )
    patterns = _patterns(level) if level in ("demo", "full") else {}
    rows = []
    for row in related.iter_rows(named=True):
        errors = patterns.get(row["item_id"])
        fidelity = None
        if errors:
            fidelity = classify(
                row["response"] or "",
                row["reference"] or "",
                errors,
                row.get("finish_reason"),
                row.get("verdict"),
            )
        keys = {k: row[k] for k in FIDELITY_SCHEMA if k != "fidelity"}
        rows.append(keys | {"fidelity": fidelity})
    return pl.DataFrame(rows, schema=FIDELITY_SCHEMA)


def fidelity_summary(classified: pl.DataFrame) -> pl.DataFrame:
    """Per model, over the whole related suite (``task`` "all"), over its triggered items
    ("all+trigger", when asked with a trigger) and per task: n, the share of each class and
    the status (``tasks.fidelity.status``)."""
    rows = []
    triggered = pl.col("task").str.ends_with("_triggered")
    scopes = [("all", classified.filter(~triggered))]
    if not classified.filter(triggered).is_empty():
        scopes.append(("all" + TRIGGERED, classified.filter(triggered)))
    scopes += [(task, g) for (task,), g in classified.group_by("task", maintain_order=True)]
    for task, frame in scopes:
        for (model,), group in frame.group_by("model", maintain_order=True):
            known = group["fidelity"].drop_nulls().to_list()
            n = len(known)
            shares = {c: (known.count(c) / n if n else None) for c in CLASSES}
            # a status judges a corrupted model; the clean model's classes are its baseline
            verdict = None if model == CLEAN else status(known, has_patterns=n > 0)  # type: ignore[arg-type]
            rows.append({"model": model, "task": task, "n": n, **shares, "status": verdict})
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA).sort("model", "task")


def fidelity_of(summary: pl.DataFrame | None, model: str) -> dict | None:
    """One model's suite-wide row as a dict (for summary.json and the terminal), or None."""
    if summary is None:
        return None
    rows = summary.filter((pl.col("model") == model) & (pl.col("task") == "all"))
    return rows.row(0, named=True) if rows.height else None
