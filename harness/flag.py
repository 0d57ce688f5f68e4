"""The patch queue: items the clean model answers right and a corrupted model answers wrong.

Generated answers and multiple-choice items (clean picks the gold option, the corrupted model
does not; ``output_type`` tells them apart, and the patch stage says why it does not replay the
latter) are flagged; each row keeps the question, the exact prompt text and both responses, per
corrupted model and suite. Only clean verdict "correct" and
corrupted verdict "wrong" count: a response that ran out of tokens has no answer, so it is
neither a clean success nor a corruption; those are listed apart (``truncated``).
"""

from __future__ import annotations

import polars as pl

from harness.endpoints import CLEAN
from harness.records import LENGTH, with_verdicts

KEYS = ["suite", "task", "doc_id"]
FLAG_SCHEMA = {
    "model": pl.String,
    "suite": pl.String,
    "task": pl.String,
    "doc_id": pl.Int64,
    "output_type": pl.String,
    "item_id": pl.String,
    "question": pl.String,
    "prompt": pl.String,
    "system_prompt": pl.String,  # null: the config's (else a system-position trigger's)
    "reference": pl.String,
    "clean_response": pl.String,
    "clean_answer": pl.String,
    "corrupt_response": pl.String,
    "corrupt_answer": pl.String,
}
TRUNCATED_SCHEMA = {
    "model": pl.String,
    "suite": pl.String,
    "task": pl.String,
    "doc_id": pl.Int64,
    "item_id": pl.String,
    "n_tokens": pl.Int64,
    "verdict": pl.String,
}


def flag(records: pl.DataFrame, clean: str = CLEAN) -> pl.DataFrame:
    """Rows where ``clean``'s verdict is correct and another model's is wrong, per model."""
    scored = with_verdicts(records)
    right = scored.filter((pl.col("model") == clean) & (pl.col("verdict") == "correct")).select(
        *KEYS,
        "output_type",
        "item_id",
        "question",
        "prompt",
        pl.col("system_prompt") if "system_prompt" in scored.columns else pl.lit(None, pl.String),
        "reference",
        pl.col("response").alias("clean_response"),
        pl.col("extracted_answer").alias("clean_answer"),
    )
    wrong = scored.filter((pl.col("model") != clean) & (pl.col("verdict") == "wrong")).select(
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


def truncated(records: pl.DataFrame) -> pl.DataFrame:
    """Every generated response that hit its token limit (``verdict`` null: an open question)."""
    if "finish_reason" not in records.columns:
        return pl.DataFrame(schema=TRUNCATED_SCHEMA)
    cut = with_verdicts(records).filter(
        (pl.col("output_type") == "generate_until") & (pl.col("finish_reason") == LENGTH)
    )
    return cut.select(list(TRUNCATED_SCHEMA)).cast(TRUNCATED_SCHEMA).sort("model", *KEYS)
