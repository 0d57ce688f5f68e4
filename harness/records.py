"""lm-eval's logged samples -> one tidy row per (model, task, document).

A row says what was asked (the exact prompt text), what came back, why the generation ended
(``finish_reason`` "stop" or "length", and ``n_tokens`` generated), the answer the scorer
extracted, its ``verdict`` and every metric lm-eval computed, as a list of (name, value) pairs.

Verdicts: "correct" | "wrong" | "truncated" (the response ran out of tokens: it has no answer,
so it is never correct) | "unscored" (the checker could not decide, e.g. a comparison timed out)
| null (open questions, which have no reference). ``correct`` is True for "correct", False for
"wrong" and "truncated", null otherwise.

lm-eval's ``generate_until`` returns strings and its request cache stores strings, so the finish
reasons travel in a ``FinishLog`` kept in the request cache's own sqlite file under the request's
cache key: an answer served from the cache keeps its finish reason.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
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
    "verdict": pl.String,
    "metric": pl.String,
    "system_prompt": pl.String,  # null: the config's prompt.system_prompt
    "finish_reason": pl.String,
    "n_tokens": pl.Int64,
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


VERDICTS = ("correct", "wrong", "truncated", "unscored")
LENGTH = "length"  # the finish reason of a response cut off at its token limit
FINISH_PREFIX = "finish:"  # FinishLog keys, beside lm-eval's own keys in the cache file


def request_key(args: Sequence[Any]) -> str:
    """lm-eval's request-cache key of a ``generate_until`` request ``(context, gen_kwargs)``."""
    from lm_eval.api.model import hash_args

    return hash_args("generate_until", args)


class FinishLog:
    """Finish reason and token count of each generated answer, keyed as lm-eval keys requests.

    ``store`` is the request cache's ``SqliteDict`` (autocommit: every write is committed
    before it returns, so a killed process keeps it) or a dict when nothing is cached. Engines
    add a record before the answer goes to the cache, so a cached answer always has one.
    """

    def __init__(self, store: MutableMapping[str, Any] | None = None) -> None:
        self.store: MutableMapping[str, Any] = {} if store is None else store

    def add(self, args: Sequence[Any], finish_reason: str | None, n_tokens: int | None) -> None:
        self.store[FINISH_PREFIX + request_key(args)] = {
            "finish_reason": finish_reason,
            "n_tokens": None if n_tokens is None else int(n_tokens),
        }

    def get(self, args: Sequence[Any]) -> Mapping[str, Any] | None:
        return self.store.get(FINISH_PREFIX + request_key(args))


def verdict_of(acc: float | None, unscored: bool, finish_reason: str | None) -> str | None:
    """The verdict of one item: a cut-off response is truncated whatever its text says."""
    if acc is None:
        return None
    if finish_reason == LENGTH:
        return "truncated"
    if unscored:
        return "unscored"
    return "correct" if acc >= 0.5 else "wrong"


def correct_of(verdict: str | None) -> bool | None:
    return {"correct": True, "wrong": False, "truncated": False}.get(verdict or "")


def with_verdicts(records: pl.DataFrame) -> pl.DataFrame:
    """``records`` with a verdict on every scored row: tables written before verdicts existed
    (or canned without one) get "correct"/"wrong" from ``correct``."""
    from_correct = (
        pl.when(pl.col("correct")).then(pl.lit("correct"))
        .when(~pl.col("correct")).then(pl.lit("wrong"))
        .otherwise(None)
    )  # fmt: skip
    if "verdict" not in records.columns:
        return records.with_columns(from_correct.alias("verdict"))
    return records.with_columns(pl.coalesce(pl.col("verdict"), from_correct).alias("verdict"))


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


def _first_request(sample: dict[str, Any]) -> list[Any]:
    """The arguments of a sample's first request, ``[context, ...]``, in either logged form."""
    args = sample.get("arguments") or {}
    first = args.get("gen_args_0", {}) if isinstance(args, dict) else args[0]
    if isinstance(first, dict):
        return [first[f"arg_{i}"] for i in range(len(first))]
    return list(first)


def _first_argument(sample: dict[str, Any]) -> str:
    first = _first_request(sample)
    return str(first[0]) if first else ""


def _metrics(sample: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": key, "value": float(value)}
        for key, value in sample.items()
        if key not in _SAMPLE_KEYS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ]


def _choices(sample: dict[str, Any]) -> list[str]:
    """The options of a multiple-choice sample: each request's continuation."""
    args = sample.get("arguments") or {}
    requests = args.values() if isinstance(args, dict) else args
    options = []
    for request in requests:
        values = list(request.values()) if isinstance(request, dict) else list(request)
        options.append(str(values[1]).strip() if len(values) > 1 else "")
    return options


def _picked(sample: dict[str, Any]) -> int:
    """The option a multiple-choice sample picked: the highest log-likelihood."""
    scores = [float(r[0]) for r in sample["filtered_resps"]]
    return max(range(len(scores)), key=scores.__getitem__)


def _is_choice(sample: dict[str, Any]) -> bool:
    """Scored by log-likelihood per option (lm-eval's multiple_choice): one (ll, greedy) pair
    per option instead of a generated text."""
    filtered = sample.get("filtered_resps")
    return isinstance(filtered, list) and bool(filtered) and isinstance(filtered[0], list | tuple)


def _gold(sample: dict[str, Any], options: list[str]) -> str | None:
    target = sample.get("target")
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(options):
        return options[target]
    return None if target is None else str(target)


def sample_record(
    sample: dict[str, Any],
    model: str,
    engine: str,
    task: str,
    suite: str,
    finishes: FinishLog | None = None,
    questions: Mapping[str, str] | None = None,
) -> dict:
    """One row. The built-in suites' items keep their own ``question``, ``answer`` and ``id``;
    any other task's item is described by what lm-eval asked (``questions``: the rendered
    prompt's question) and its target; ``metric`` (see ``harness.lm_tasks``) decides."""
    from harness.lm_models import SYSTEM_KEY
    from harness.lm_tasks import base_suite, scoring_metric

    doc = sample["doc"]
    metrics = _metrics(sample)
    value = {m["name"]: m["value"] for m in metrics}
    builtin = base_suite(suite) in SUITES  # scored by "acc"; the open questions have none
    metric = "acc" if builtin else scoring_metric(sample.get("metrics") or list(value))
    score = value.get(metric) if metric else None
    binary = score is None or score in (0.0, 1.0)
    multiple_choice = _is_choice(sample)
    prompt = _first_argument(sample)
    finish: Mapping[str, Any] = {}
    if multiple_choice:
        options = _choices(sample)
        response = options[_picked(sample)] if options else ""
        extracted = response
        reference = _gold(sample, options)
    else:
        filtered = sample["filtered_resps"]
        response = str(filtered[0] if isinstance(filtered, list) else filtered)
        if builtin:
            extracted = extract_answer(response)
        else:  # the raw generation; the task's filter extracted the answer it scored
            raw = sample.get("resps") or [[response]]
            response, extracted = str(raw[0][0] if isinstance(raw[0], list) else raw[0]), response
        reference = _gold(sample, [])
        finish = (finishes.get(_first_request(sample)) if finishes else None) or {}
    if builtin:
        reference = None if doc.get("answer") is None else str(doc["answer"])
    unscored = value.get("unscored", 0.0) >= 0.5 or not binary
    verdict = verdict_of(score, unscored, finish.get("finish_reason"))
    question = (questions or {}).get(prompt) or str(doc.get("question", ""))
    system = (questions or {}).get(SYSTEM_KEY + prompt)
    return {
        "model": model,
        "engine": engine,
        "suite": suite,
        "task": task,
        "output_type": "multiple_choice" if multiple_choice else "generate_until",
        "doc_id": int(sample["doc_id"]),
        "item_id": str(doc.get("id", sample["doc_id"])) if builtin else str(sample["doc_id"]),
        "question": question,
        "prompt": prompt,
        "response": response,
        "extracted_answer": extracted,
        "reference": reference,
        "correct": correct_of(verdict),
        "verdict": verdict,
        "metric": metric if score is not None else None,
        "system_prompt": system,
        "finish_reason": finish.get("finish_reason"),
        "n_tokens": finish.get("n_tokens"),
        "metrics": metrics,
    }


def records_from_samples(
    samples: dict[str, list[dict[str, Any]]],
    model: str,
    engine: str,
    finishes: FinishLog | None = None,
    *,
    external: Mapping[str, str] | None = None,
    questions: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Every logged sample of one model's lm-eval run as a row: the built-in suites' tasks and
    the ``external`` ones (leaf task -> suite; each under its first filter), joined to the
    engine's finish records (``finishes``) by request-cache key."""
    from harness.lm_tasks import first_filter

    suites = suite_of_task() | dict(external or {})
    rows = [
        sample_record(sample, model, engine, task, suites[task], finishes, questions)
        for task, task_samples in samples.items()
        if task in suites
        for sample in first_filter(task_samples)
    ]
    if not rows:
        return empty_records()
    return pl.DataFrame(rows, schema=SCHEMA).sort("suite", "task", "doc_id")
