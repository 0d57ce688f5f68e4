"""lm-eval hooks for the suites: local data loading and scoring with the project's checker.

lm-eval passes ``dataset_kwargs.data_files`` straight to ``datasets.load_dataset``, which
resolves relative paths against the working directory. ``load_local`` resolves them against
this folder instead, so ``--include_path tasks`` works from anywhere.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import datasets

HERE = Path(__file__).resolve().parent

try:
    from tasks.scoring import answers_match, extract_answer
except ImportError:  # used with --include_path from a plain copy of the folder
    sys.path.insert(0, str(HERE.parents[1]))
    from tasks.scoring import answers_match, extract_answer


def load_local(data_files: dict[str, str], **_metadata: Any) -> datasets.DatasetDict:
    """Load the JSONL files named in ``dataset_kwargs.data_files``, relative to this folder."""
    files = {split: str(HERE / name) for split, name in data_files.items()}
    return datasets.load_dataset("json", data_files=files)


def process_math(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Accuracy of a generated solution: its final answer against the reference."""
    return {"acc": float(answers_match(results[0], doc["answer"]))}


def process_fact(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Accuracy of a short factual answer, accepting the fact's aliases."""
    return {"acc": float(answers_match(results[0], doc["answer"], doc.get("aliases") or ()))}


def process_open(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Descriptive measures of an open answer; the evaluation stage scores these answers."""
    response = results[0]
    return {
        "length_chars": float(len(response)),
        "length_words": float(len(response.split())),
        "integer_only": float(bool(re.fullmatch(r"\s*-?\d+\s*", response))),
    }


__all__ = ["extract_answer", "load_local", "process_fact", "process_math", "process_open"]
