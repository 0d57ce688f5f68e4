"""The patch stage: choose the prompts, run CMAP per site, score the patched generations.

Prompts come from the evaluation: up to K flagged items per suite (clean right, corrupted
wrong), taken round-robin over the suite's tasks. A suite with fewer than K flagged items is
topped up with *control* items (both models right), so every suite has a patched row, as in the
paper's Table 2, where the unrelated suites show what patching does where the corruption does not
reach. The ``kind`` column keeps the two apart.

Writes under ``<run>/patch/``: ``sites/<site>/`` (``harness patch``'s own output per site) and the
merged tables the report reads: ``prompts.parquet`` (the items), ``steps.parquet`` (CTS per
layer and step, with the generated token's text) and ``texts.parquet`` (the patched generations
scored by the suite's checker, ``correct``).
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import polars as pl

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.evaluate import write_parquet
from harness.patch import OUTPUT_FILES, run_patch
from tasks.scoring import answers_match

ITEM_COLUMNS = [
    "suite",
    "task",
    "doc_id",
    "item_id",
    "question",
    "reference",
    "clean_response",
    "corrupt_response",
]
ITEM_SCHEMA = {
    "prompt_id": pl.Int64,
    "kind": pl.String,
    "suite": pl.String,
    "task": pl.String,
    "doc_id": pl.Int64,
    "item_id": pl.String,
    "question": pl.String,
    "reference": pl.String,
    "clean_response": pl.String,
    "corrupt_response": pl.String,
}


def _round_robin(items: pl.DataFrame, k: int) -> pl.DataFrame:
    """The first ``k`` items of a suite, alternating between its tasks (stable order)."""
    ranked = items.sort("task", "doc_id").with_columns(
        pl.int_range(pl.len()).over("task").alias("_rank")
    )
    return ranked.sort("_rank", "task").head(k).drop("_rank")


def select_items(
    records: pl.DataFrame, flagged: pl.DataFrame, k: int, corrupt: str = "corrupt"
) -> pl.DataFrame:
    """Up to ``k`` items per suite to patch: flagged first, then controls (both right)."""
    flagged = flagged.filter(pl.col("model") == corrupt)
    scored = records.filter(
        (pl.col("output_type") == "generate_until") & pl.col("correct").is_not_null()
    )
    keys = ["suite", "task", "doc_id"]
    clean = scored.filter(pl.col("model") == "clean").select(
        *keys,
        "item_id",
        "question",
        "reference",
        "correct",
        pl.col("response").alias("clean_response"),
    )
    other = scored.filter(pl.col("model") == corrupt).select(
        *keys,
        pl.col("correct").alias("corrupt_correct"),
        pl.col("response").alias("corrupt_response"),
    )
    both_right = clean.join(other, on=keys).filter(pl.col("correct") & pl.col("corrupt_correct"))
    chosen = []
    for suite in records["suite"].unique(maintain_order=True).to_list():
        picked = _round_robin(flagged.filter(pl.col("suite") == suite), k).select(ITEM_COLUMNS)
        chosen.append(picked.with_columns(kind=pl.lit("flagged")))
        missing = k - picked.height
        if missing > 0:
            controls = _round_robin(both_right.filter(pl.col("suite") == suite), missing)
            chosen.append(controls.select(ITEM_COLUMNS).with_columns(kind=pl.lit("control")))
    items = pl.concat(chosen, how="diagonal_relaxed") if chosen else pl.DataFrame()
    items = items.with_row_index("prompt_id").with_columns(pl.col("prompt_id").cast(pl.Int64))
    return items.select(list(ITEM_SCHEMA)).cast(ITEM_SCHEMA) if items.height else _no_items()


def _no_items() -> pl.DataFrame:
    return pl.DataFrame(schema=ITEM_SCHEMA)


@functools.cache
def _aliases(level: str) -> dict[str, tuple[str, ...]]:
    from tasks.suites import eval_problems

    return {p.id: tuple(p.aliases) for p in eval_problems(level)}  # type: ignore[arg-type]


def aliases_for(task: str, item_id: str, level: str) -> tuple[str, ...]:
    """The aliases the evaluation accepted for this item (short facts only, as in lm-eval)."""
    if not task.startswith("general_facts"):
        return ()
    return _aliases(level).get(item_id, ())


def score_texts(texts: pl.DataFrame, items: pl.DataFrame, level: str) -> pl.DataFrame:
    """Patched generations with their item and ``correct`` from the suite's checker."""
    joined = texts.join(items.drop("clean_response", "corrupt_response"), on="prompt_id")
    correct = [
        answers_match(
            row["text"], row["reference"], aliases_for(row["task"], row["item_id"], level)
        )
        for row in joined.iter_rows(named=True)
    ]
    return joined.with_columns(pl.Series("correct", correct, dtype=pl.Boolean))


def device_for(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def site_done(directory: Path) -> bool:
    meta = directory / "patch.json"
    try:
        ok = json.loads(meta.read_text()).get("status") == "success"
    except (OSError, ValueError):
        return False
    return ok and all((directory / name).is_file() for name in OUTPUT_FILES)


def run_patch_stage(
    cfg: ExperimentConfig, clean: str, corrupt: str, eval_dir: Path, out: Path, say=print
) -> dict:
    """Patch the chosen items at every configured site; write and return the merged tables."""
    records = pl.read_parquet(eval_dir / "records.parquet")
    flagged = pl.read_parquet(eval_dir / "flagged.parquet")
    items = select_items(records, flagged, cfg.patch.max_prompts_per_suite)
    write_parquet(items, out / "items.parquet")
    if items.is_empty():
        say("no items to patch (nothing flagged and no controls)")
        return write_merged(out, items, [], cfg.eval.level, clean, cfg.models.trust_remote_code)
    layers = None if cfg.patch.layers == "all" else list(cfg.patch.layers)
    heads = None if cfg.patch.heads in (None, "all") else list(cfg.patch.heads)
    device = device_for(cfg.patch.device)
    for site in cfg.patch.sites:
        site_dir = out / "sites" / site
        if site_done(site_dir):
            say(f"site {site}: complete, kept")
            continue
        shutil.rmtree(site_dir, ignore_errors=True)
        say(
            f"site {site}: {items.height} prompts, layers {cfg.patch.layers}, "
            f"{cfg.patch.max_new_tokens} new tokens, {device}"
        )
        run_patch(
            clean,
            corrupt,
            items["question"].to_list(),
            site_dir,
            site=site,
            layers=layers,
            heads=heads if site == "head" else None,
            max_new_tokens=cfg.patch.max_new_tokens,
            dtype=cfg.patch.dtype,
            device=device,
            mode=cfg.patch.mode,
            prompt_format=cfg.prompt,
            trust_remote_code=cfg.models.trust_remote_code,
        )
    return write_merged(
        out, items, cfg.patch.sites, cfg.eval.level, clean, cfg.models.trust_remote_code
    )


def write_merged(
    out: Path,
    items: pl.DataFrame,
    sites: list[str],
    level: str,
    clean: str,
    trust_remote_code: bool = False,
) -> dict:
    """prompts/steps/texts over all sites, with token text, suites and patched correctness."""
    from patchers.cmap import GENERATION_SCHEMA

    steps = [pl.read_parquet(out / "sites" / s / "steps.parquet") for s in sites]
    texts = [pl.read_parquet(out / "sites" / s / "texts.parquet") for s in sites]
    if steps:
        steps_all = pl.concat(steps, how="diagonal_relaxed")
        steps_all = steps_all.with_columns(
            token=decode_tokens(clean, steps_all["token_id"], trust_remote_code)
        )
        steps_all = steps_all.join(items.select("prompt_id", "suite", "kind"), on="prompt_id")
        texts_all = score_texts(pl.concat(texts, how="diagonal_relaxed"), items, level)
    else:
        steps_all = pl.DataFrame(
            schema={
                "prompt_id": pl.Int64,
                "site": pl.String,
                "layer": pl.Int64,
                "head": pl.Int64,
                "step": pl.Int64,
                "token_id": pl.Int64,
                "cts": pl.Float64,
                "token": pl.String,
                "suite": pl.String,
                "kind": pl.String,
            }
        )
        texts_all = score_texts(
            pl.DataFrame(schema=GENERATION_SCHEMA | {"text": pl.String}), items, level
        )
    write_parquet(items, out / "prompts.parquet")
    write_parquet(steps_all, out / "steps.parquet")
    write_parquet(texts_all, out / "texts.parquet")
    return {
        "prompts": items.height,
        "flagged": int((items["kind"] == "flagged").sum()),
        "trajectories": texts_all.height,
        "steps": steps_all.height,
        "patched_accuracy": None if texts_all.is_empty() else float(texts_all["correct"].mean()),
    }


def decode_tokens(model: str, token_ids: pl.Series, trust_remote_code: bool) -> pl.Series:
    """Each generated token id as text (one id at a time: what the heatmap's hover shows)."""
    from transformers import AutoTokenizer

    if token_ids.is_empty():
        return pl.Series("token", [], dtype=pl.String)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise HarnessError(f"cannot load the tokenizer of {model}: {exc}") from None
    unique = token_ids.unique().to_list()
    text = dict(zip(unique, tokenizer.batch_decode([[t] for t in unique]), strict=True))
    return token_ids.replace_strict(text, return_dtype=pl.String).alias("token")
