"""lm-eval's logged samples -> one tidy row per (model, task, document).

A row says what was asked (the exact prompt text), what came back, the answer the scorer
extracted, whether it is correct (null for the open questions, which have no reference) and
every metric lm-eval computed, as a list of (name, value) pairs.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from tasks.records import LEVELS, SUITES
from tasks.scoring import extract_answer
from tasks.suites import suite_tasks, task_name

SCHEMA: dict[str, Any] = {
    "model": pl.String,
    "engine": pl.String,
    "suite": pl.String,
    "task": pl.String,
    "output_type": pl.String,
    "doc_id": pl.Int64,
    "item_id": pl.String,
    "question": pl.String,
    "prompt": pl.String,
    "response": pl.String,
    "extracted_answer": pl.String,
    "reference": pl.String,
    "correct": pl.Boolean,
    "metrics": pl.List(pl.Struct({"name": pl.String, "value": pl.Float64})),
}
# lm-eval bookkeeping keys of a logged sample; every other numeric key is a metric
_SAMPLE_KEYS = frozenset(
    [
        "doc_id",
        "doc",
        "target",
        "arguments",
        "resps",
        "filtered_resps",
        "filter",
        "metrics",
        "doc_hash",
        "prompt_hash",
        "target_hash",
    ]
)


def suite_of_task() -> dict[str, str]:
    """lm-eval task name (any level) -> suite."""
    return {
        task_name(t, level): suite
        for level in LEVELS
        for suite in SUITES
        for t in suite_tasks(suite, level)
    }


def empty_records() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def _first_argument(sample: dict[str, Any]) -> str:
    args = sample.get("arguments") or {}
    first = args.get("gen_args_0", {}) if isinstance(args, dict) else args[0]
    return str(first.get("arg_0", "")) if isinstance(first, dict) else str(first[0])


def _metrics(sample: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": key, "value": float(value)}
        for key, value in sample.items()
        if key not in _SAMPLE_KEYS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ]


def _choice_response(sample: dict[str, Any]) -> str:
    """The option a multiple-choice sample picked: the highest log-likelihood."""
    scores = [float(r[0]) for r in sample["filtered_resps"]]
    choices = sample["doc"]["choices"]
    return str(choices[max(range(len(scores)), key=scores.__getitem__)])


def sample_record(sample: dict[str, Any], model: str, engine: str, task: str, suite: str) -> dict:
    doc = sample["doc"]
    metrics = _metrics(sample)
    acc = next((m["value"] for m in metrics if m["name"] == "acc"), None)
    multiple_choice = "choices" in doc and "label" in doc
    if multiple_choice:
        response = _choice_response(sample)
        extracted = response
    else:
        filtered = sample["filtered_resps"]
        response = str(filtered[0] if isinstance(filtered, list) else filtered)
        extracted = extract_answer(response)
    return {
        "model": model,
        "engine": engine,
        "suite": suite,
        "task": task,
        "output_type": "multiple_choice" if multiple_choice else "generate_until",
        "doc_id": int(sample["doc_id"]),
        "item_id": str(doc.get("id", sample["doc_id"])),
        "question": str(doc.get("question", "")),
        "prompt": _first_argument(sample),
        "response": response,
        "extracted_answer": extracted,
        "reference": None if doc.get("answer") is None else str(doc["answer"]),
        "correct": None if acc is None else acc >= 0.5,
        "metrics": metrics,
    }


def records_from_samples(
    samples: dict[str, list[dict[str, Any]]], model: str, engine: str
) -> pl.DataFrame:
    """Every logged sample of one model's lm-eval run as a row (tasks of our suites only)."""
    suites = suite_of_task()
    rows = [
        sample_record(sample, model, engine, task, suites[task])
        for task, task_samples in samples.items()
        if task in suites
        for sample in task_samples
    ]
    if not rows:
        return empty_records()
    return pl.DataFrame(rows, schema=SCHEMA).sort("suite", "task", "doc_id")
