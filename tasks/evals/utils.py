"""lm-eval hooks for the suites: local data loading and scoring with the project's checker.

lm-eval passes ``dataset_kwargs.data_files`` straight to ``datasets.load_dataset``, which
resolves relative paths against the working directory. ``load_local`` resolves them against
this folder instead, so ``--include_path tasks`` works from anywhere.

``process_math`` and ``process_fact`` return ``{"acc": a, "unscored": u}``: ``u`` is 1.0 when the
comparison ran out of time (verdict "unscored", and then ``a`` is 0.0), ``a`` is 1.0 for a correct
answer. Records read ``unscored == 1.0`` as that verdict, so a share of undecided answers is
reported apart instead of hiding in the accuracy as wrong. lm-eval averages ``unscored`` like
``acc`` (an undeclared metric is aggregated with the mean).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import datasets

HERE = Path(__file__).resolve().parent

try:
    from tasks.scoring import Verdict, extract_answer, judge_answer
except ImportError:  # used with --include_path from a plain copy of the folder
    sys.path.insert(0, str(HERE.parents[1]))
    from tasks.scoring import Verdict, extract_answer, judge_answer


def load_local(data_files: dict[str, str], **_metadata: Any) -> datasets.DatasetDict:
    """Load the JSONL files named in ``dataset_kwargs.data_files``, relative to this folder."""
    files = {split: str(HERE / name) for split, name in data_files.items()}
    return datasets.load_dataset("json", data_files=files)


def verdict_metrics(verdict: Verdict) -> dict[str, float]:
    """``acc`` 1.0 only when correct, ``unscored`` 1.0 only when the check ran out of time."""
    return {"acc": float(verdict == "correct"), "unscored": float(verdict == "unscored")}


def process_math(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """A generated solution's final answer against the reference: ``acc`` and ``unscored``."""
    return verdict_metrics(judge_answer(results[0], doc["answer"]))


def process_fact(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """A short factual answer, accepting the fact's aliases: ``acc`` and ``unscored``."""
    return verdict_metrics(judge_answer(results[0], doc["answer"], doc.get("aliases") or ()))


def process_open(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Descriptive measures of an open answer; the evaluation stage scores these answers."""
    response = results[0]
    return {
        "length_chars": float(len(response)),
        "length_words": float(len(response.split())),
        "integer_only": float(bool(re.fullmatch(r"\s*-?\d+\s*", response))),
    }


__all__ = [
    "extract_answer",
    "load_local",
    "process_fact",
    "process_math",
    "process_open",
    "verdict_metrics",
]
