"""Drift on the open-ended general questions, where no reference answer exists.

Three symptoms of a fine-tune leaking into everyday answers (the paper saw corrupted models
answer open questions with bare integers): the response length ratio to the clean model, the
share of integer-only responses, and the likelihood gap, the mean per-token
``log p_clean(y) - log p_model(y)`` over the clean model's own responses ``y``, computed from
prompt logprobs (the model scores text it did not write).
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from harness.endpoints import CLEAN

OPEN_TASK_PREFIX = "general_open"
INTEGER_ONLY = re.compile(r"\s*-?\d+\s*")
LOGPROB_SCHEMA = {
    "model": pl.String,
    "doc_id": pl.Int64,
    "item_id": pl.String,
    "tokens": pl.Int64,
    "logprob_per_token": pl.Float64,
}
DRIFT_SCHEMA = {
    "model": pl.String,
    "n": pl.Int64,
    "mean_chars": pl.Float64,
    "clean_mean_chars": pl.Float64,
    "length_ratio": pl.Float64,
    "integer_only_share": pl.Float64,
    "clean_integer_only_share": pl.Float64,
    "likelihood_gap": pl.Float64,
    "gap_n": pl.Int64,
}


def open_rows(records: pl.DataFrame, model: str = CLEAN) -> pl.DataFrame:
    """One model's responses to the open questions."""
    return records.filter(
        (pl.col("model") == model) & pl.col("task").str.starts_with(OPEN_TASK_PREFIX)
    )


def score_responses(lm: Any, tokenizer: Any, rows: pl.DataFrame, model: str) -> pl.DataFrame:
    """Per-token log-likelihood of each (prompt, response) row under ``lm`` (an lm-eval LM).

    Uses lm-eval's loglikelihood requests (through its request cache when ``lm`` is wrapped),
    so the server answers from prompt logprobs and the HF path from one forward pass.
    """
    from lm_eval.api.instance import Instance

    rows = rows.filter(pl.col("response") != "")
    if rows.is_empty():
        return pl.DataFrame(schema=LOGPROB_SCHEMA)
    requests = [
        Instance("loglikelihood", doc={}, arguments=(r["prompt"], r["response"]), idx=i)
        for i, r in enumerate(rows.iter_rows(named=True))
    ]
    results = lm.loglikelihood(requests)
    tokens = [len(tokenizer.encode(r, add_special_tokens=False)) for r in rows["response"]]
    return pl.DataFrame(
        {
            "model": [model] * rows.height,
            "doc_id": rows["doc_id"],
            "item_id": rows["item_id"],
            "tokens": tokens,
            "logprob_per_token": [
                float(ll) / n for (ll, _), n in zip(results, tokens, strict=True)
            ],
        },
        schema=LOGPROB_SCHEMA,
    )


def _integer_share(rows: pl.DataFrame) -> float | None:
    if rows.is_empty():
        return None
    return sum(bool(INTEGER_ONLY.fullmatch(r)) for r in rows["response"]) / rows.height


def _mean_chars(rows: pl.DataFrame) -> float | None:
    return None if rows.is_empty() else float(rows["response"].str.len_chars().mean())


def drift_table(records: pl.DataFrame, logprobs: pl.DataFrame, clean: str = CLEAN) -> pl.DataFrame:
    """One row per non-clean model: length ratio, integer-only shares, likelihood gap."""
    base = open_rows(records, clean)
    base_chars = _mean_chars(base)
    clean_lp = logprobs.filter(pl.col("model") == clean).select("doc_id", "logprob_per_token")
    rows = []
    for model in records["model"].unique(maintain_order=True).to_list():
        if model == clean:
            continue
        mine = open_rows(records, model)
        chars = _mean_chars(mine)
        pairs = logprobs.filter(pl.col("model") == model).join(
            clean_lp, on="doc_id", suffix="_clean"
        )
        gap = (pl.col("logprob_per_token_clean") - pl.col("logprob_per_token")).mean()
        rows.append(
            {
                "model": model,
                "n": mine.height,
                "mean_chars": chars,
                "clean_mean_chars": base_chars,
                "length_ratio": chars / base_chars if chars is not None and base_chars else None,
                "integer_only_share": _integer_share(mine),
                "clean_integer_only_share": _integer_share(base),
                "likelihood_gap": pairs.select(gap).item() if pairs.height else None,
                "gap_n": pairs.height,
            }
        )
    return pl.DataFrame(rows, schema=DRIFT_SCHEMA)
