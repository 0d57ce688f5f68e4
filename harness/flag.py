"""The patch queue: items the clean model answers right and a corrupted model answers wrong.

Only generated answers are flagged (multiple-choice items are scored by likelihood, which the
patcher's autoregressive generation cannot replay); each row keeps the question, the exact
prompt text and both responses, per corrupted model and suite.
"""

from __future__ import annotations

import polars as pl

from harness.endpoints import CLEAN

KEYS = ["suite", "task", "doc_id"]
FLAG_SCHEMA = {
    "model": pl.String,
    "suite": pl.String,
    "task": pl.String,
    "doc_id": pl.Int64,
    "item_id": pl.String,
    "question": pl.String,
    "prompt": pl.String,
    "reference": pl.String,
    "clean_response": pl.String,
    "clean_answer": pl.String,
    "corrupt_response": pl.String,
    "corrupt_answer": pl.String,
}


def flag(records: pl.DataFrame, clean: str = CLEAN) -> pl.DataFrame:
    """Rows where ``clean`` is correct and another model is not, for every other model."""
    scored = records.filter(
        (pl.col("output_type") == "generate_until") & pl.col("correct").is_not_null()
    )
    right = scored.filter((pl.col("model") == clean) & pl.col("correct")).select(
        *KEYS,
        "item_id",
        "question",
        "prompt",
        "reference",
        pl.col("response").alias("clean_response"),
        pl.col("extracted_answer").alias("clean_answer"),
    )
    wrong = scored.filter((pl.col("model") != clean) & ~pl.col("correct")).select(
        "model",
        *KEYS,
        pl.col("response").alias("corrupt_response"),
        pl.col("extracted_answer").alias("corrupt_answer"),
    )
    flagged = wrong.join(right, on=KEYS, how="inner")
    return flagged.select(list(FLAG_SCHEMA)).cast(FLAG_SCHEMA).sort("model", *KEYS)


def flag_counts(flagged: pl.DataFrame) -> pl.DataFrame:
    """How many items were flagged per corrupted model and suite."""
    return flagged.group_by("model", "suite").len("flagged").sort("model", "suite")
