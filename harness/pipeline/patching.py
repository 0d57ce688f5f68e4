"""The patch stage: choose the prompts, run CMAP per site, score the patched generations.

Prompts come from the evaluation: every flagged item of a suite (clean right, corrupted wrong;
``patch.max_prompts_per_suite`` caps them, taken round-robin over the suite's tasks) and
*control* items (both models right): per suite as many as the most flagged suite has flagged
items, at most ``patch.max_controls_per_suite``, so every suite has a patched row, as in the
paper's Table 2, where the unrelated suites show what patching does where the corruption does not
reach. The ``kind`` column keeps the two apart. Where the records carry a ``verdict``, a control
is an item both models answered with verdict "correct" (a truncated answer is no success).

Patched generations get the evaluation's token limit unless ``patch.max_new_tokens`` says
otherwise (``run.json`` keeps both limits, and the report says when they differ); a patched text
that ran out of tokens is ``truncated``, never correct. Every run ends with the sanity checks of
``harness.patch.sanity_checks``; a failed one is logged as ``CHECK FAILED: ...`` at error level.

Writes under ``<run>/patch/``: ``sites/<site>/`` (``harness patch``'s own output per site) and the
merged tables the report reads: ``prompts.parquet`` (the items), ``steps.parquet`` (CTS per
layer and step, with the generated token's text), ``texts.parquet`` (the patched generations
with ``finish_reason``, ``n_tokens`` and the suite checker's ``verdict`` and ``correct``),
``table2.parquet`` (accuracy per condition, patched per layer with 95 % Wilson intervals by
prompt, see ``harness.report.stats.table2_frame``), ``cts_summary.parquet`` (CTS statistics
bootstrapped over prompts), ``checks.parquet`` (each check per prompt) and ``run.json``. Steps,
texts, Table 2 and the CTS statistics carry the corrupted model's name (``model``); with several
corrupted models each has a ``patch/<name>/`` of its own.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from harness.config import CORRUPT_NAME, ExperimentConfig, PatchConfig
from harness.errors import HarnessError
from harness.evaluate import write_parquet
from harness.lm_tasks import TaskScorer, base_suite, plan_eval
from harness.patch import (
    CHECK_SCHEMA,
    OUTPUT_FILES,
    TEXT_SCHEMA,
    LoadedModels,
    check_line,
    checks_summary,
    encode_prompts,
    load_models,
    run_patch,
    sanity_checks,
)
from harness.records import correct_of
from tasks.records import SUITES

log = logging.getLogger("harness.pipeline.patch")
VERDICT_SCHEMA = {"verdict": pl.String, "correct": pl.Boolean}

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
    records: pl.DataFrame,
    flagged: pl.DataFrame,
    k: int | None = None,
    max_controls: int = 50,
    corrupt: str = CORRUPT_NAME,
) -> pl.DataFrame:
    """The items to patch per suite: flagged ones (at most ``k``; None: all), then controls.

    Controls per suite: as many as the most flagged suite has flagged items, at most
    ``max_controls``; none when nothing is flagged (there is no corruption to compare with).
    """
    flagged = generated(flagged.filter(pl.col("model") == corrupt))
    scored = records.filter(
        (pl.col("output_type") == "generate_until") & pl.col("correct").is_not_null()
    )
    right = pl.col("correct")
    if "verdict" in scored.columns:  # a truncated answer is no success, whatever ``correct`` says
        right = pl.coalesce(pl.col("verdict") == "correct", right)
    scored = scored.with_columns(right.fill_null(False).alias("right"))
    keys = ["suite", "task", "doc_id"]
    clean = scored.filter(pl.col("model") == "clean").select(
        *keys,
        "item_id",
        "question",
        "reference",
        "right",
        pl.col("response").alias("clean_response"),
    )
    other = scored.filter(pl.col("model") == corrupt).select(
        *keys,
        pl.col("right").alias("corrupt_right"),
        pl.col("response").alias("corrupt_response"),
    )
    both_right = clean.join(other, on=keys).filter(pl.col("right") & pl.col("corrupt_right"))
    suites = records["suite"].unique(maintain_order=True).to_list()
    picked = {}
    for suite in suites:
        in_suite = flagged.filter(pl.col("suite") == suite)
        picked[suite] = _round_robin(in_suite, in_suite.height if k is None else k)
    n_controls = min(max_controls, max((p.height for p in picked.values()), default=0))
    chosen = []
    for suite in suites:
        chosen.append(picked[suite].select(ITEM_COLUMNS).with_columns(kind=pl.lit("flagged")))
        controls = _round_robin(both_right.filter(pl.col("suite") == suite), n_controls)
        chosen.append(controls.select(ITEM_COLUMNS).with_columns(kind=pl.lit("control")))
    items = pl.concat(chosen, how="diagonal_relaxed") if chosen else pl.DataFrame()
    items = items.with_row_index("prompt_id").with_columns(pl.col("prompt_id").cast(pl.Int64))
    return items.select(list(ITEM_SCHEMA)).cast(ITEM_SCHEMA) if items.height else _no_items()


SKIPPED = {
    "multiple_choice": "multiple-choice items are scored by the likelihood of each option, "
    "which autoregressive patching does not replay",
    "system_prompt": "items asked with a system prompt of their own (a system-position "
    "trigger) are patched with the config's prompt format only, so they are left out",
}


def _skip_reason(frame: pl.DataFrame) -> pl.Expr:
    """Why an item is not patched (null: it is): see ``SKIPPED``."""
    choice = pl.col("output_type") != "generate_until" if "output_type" in frame.columns else None
    system = pl.col("system_prompt").is_not_null() if "system_prompt" in frame.columns else None
    reason = pl.lit(None, pl.String)
    if system is not None:
        reason = pl.when(system).then(pl.lit("system_prompt")).otherwise(reason)
    if choice is not None:
        reason = pl.when(choice).then(pl.lit("multiple_choice")).otherwise(reason)
    return reason


def generated(flagged: pl.DataFrame) -> pl.DataFrame:
    """The flagged items the patcher can replay: a generated answer to the config's prompt
    format (tables from before ``output_type`` and ``system_prompt``: all)."""
    return flagged.filter(_skip_reason(flagged).is_null())


def skipped_items(flagged: pl.DataFrame, corrupt: str = CORRUPT_NAME) -> dict[str, Any]:
    """How many flagged items the patch stage leaves out, per reason, and why (the report
    says it): ``{"multiple_choice": {"items": 3, "reason": ...}}``."""
    mine = flagged.filter(pl.col("model") == corrupt)
    counts = mine.select(_skip_reason(mine).alias("why")).drop_nulls()["why"].value_counts()
    return {
        why: {"items": int(n), "reason": SKIPPED[why]} for why, n in counts.sort("why").iter_rows()
    }


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


def judge(response: str, reference: str, aliases: tuple[str, ...]) -> str:
    """The suite checker's verdict: correct / wrong / unscored (``tasks.scoring``)."""
    from tasks import scoring

    judge_answer = getattr(scoring, "judge_answer", None)
    if judge_answer is not None:
        return judge_answer(response, reference, aliases)
    return "correct" if scoring.answers_match(response, reference, aliases) else "wrong"


def score_texts(
    texts: pl.DataFrame, items: pl.DataFrame, level: str, scorer: TaskScorer | None = None
) -> pl.DataFrame:
    """Patched generations with their item, ``verdict`` and ``correct``.

    The built-in suites' texts go to the suite checker; an external task's (``scorer``) to the
    task's own filters and metric, as the evaluation scored them. A text that ran out of tokens
    (``finish_reason`` "length") is "truncated" whatever it says: its answer may be cut off, so
    it is never correct. ``correct`` is True for "correct", False for "wrong" and "truncated",
    null for "unscored" (the checker could not decide).
    """
    joined = texts.join(items.drop("clean_response", "corrupt_response"), on="prompt_id")
    if "finish_reason" not in joined.columns:
        joined = joined.with_columns(finish_reason=pl.lit(None, pl.String))

    def verdict(row: dict[str, Any]) -> str:
        if row["finish_reason"] == "length":
            return "truncated"
        if base_suite(row["suite"]) in SUITES or scorer is None:
            aliases = aliases_for(row["task"], row["item_id"], level)
            return judge(row["text"], row["reference"], aliases)
        _, value = scorer.score(row["task"], row["doc_id"], row["text"])
        if value is None or value not in (0.0, 1.0):
            return "unscored"
        return "correct" if value == 1.0 else "wrong"

    verdicts = [verdict(row) for row in joined.iter_rows(named=True)]
    return joined.with_columns(
        pl.Series("verdict", verdicts, dtype=pl.String),
        pl.Series("correct", [correct_of(v) for v in verdicts], dtype=pl.Boolean),
    )


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
    cfg: ExperimentConfig,
    clean: str,
    corrupt: str,
    eval_dir: Path,
    out: Path,
    say: Callable[[str], None] = print,
    alarm: Callable[[str], None] | None = None,
    model: str = CORRUPT_NAME,
) -> dict:
    """Patch the items the corrupted model (``model``: its name in the evaluation's tables;
    ``corrupt``: its reference) was flagged on at
    every configured site, run the sanity checks, write the merged tables; ``alarm``
    (default: an error-level log line) gets each failed check."""
    alarm = alarm or log.error
    patch = cfg.patch
    limit = patch.token_limit(cfg.eval.max_new_tokens)
    records = pl.read_parquet(eval_dir / "records.parquet")
    flagged = pl.read_parquet(eval_dir / "flagged.parquet")
    items = select_items(
        records, flagged, patch.max_prompts_per_suite, patch.max_controls_per_suite, model
    )
    write_parquet(items, out / "items.parquet")
    skipped = skipped_items(flagged, model)
    for why in skipped.values():
        say(f"{why['items']} flagged items not patched: {why['reason']}")
    spec = {
        "version": 1,
        "model": model,
        "skipped": skipped,
        "max_new_tokens": limit,
        "eval_max_new_tokens": cfg.eval.max_new_tokens,
        "sites": list(patch.sites),
        "mode": patch.mode,
        "dtype": patch.dtype,
    }
    if limit < cfg.eval.max_new_tokens:
        say(
            f"patched generations are limited to {limit} tokens, the evaluation's to "
            f"{cfg.eval.max_new_tokens} (patch.max_new_tokens)"
        )
    if items.is_empty():
        say("no items to patch (nothing flagged and no controls)")
        return write_merged(out, items, [], cfg, clean, eval_dir, spec, pl.DataFrame())
    device = device_for(patch.device)
    load = {
        "dtype": patch.dtype,
        "device": device,
        "trust_remote_code": cfg.models.trust_remote_code,
        "device_map": patch.device_map,
    }
    questions = items["question"].to_list()
    todo = []
    for site in patch.sites:
        if site_done(out / "sites" / site):
            say(f"site {site}: complete, kept")
        else:
            todo.append(site)
            where = f"{device}, {patch.workers} Ray workers" if patch.workers > 1 else device
            say(f"site {site}: {items.height} prompts, layers {patch.layers}, {limit} new tokens, "
                f"{where}")  # fmt: skip
    site_dirs = {out / "sites" / site: [site] for site in todo}
    for site_dir in site_dirs:  # an interrupted attempt's
        shutil.rmtree(site_dir, ignore_errors=True)
    if todo and patch.workers > 1:
        from harness.shards import run_patch_on_ray

        run_patch_on_ray(clean, corrupt, load, questions, patch, cfg.prompt, limit, site_dirs,
                         out / "shards", say)  # fmt: skip
    models = load_models(clean, corrupt, **load)
    for site_dir, sites in site_dirs.items() if patch.workers == 1 else []:
        run_patch(models, questions, site_dir, patch, cfg.prompt, limit, sites)
    checks = run_checks(models, items, cfg, limit, out)
    for entry in checks_summary(checks):
        (say if entry["status"] != "failed" else alarm)(check_line(entry))
    return write_merged(out, items, patch.sites, cfg, clean, eval_dir, spec, checks)


def run_checks(
    models: LoadedModels, items: pl.DataFrame, cfg: ExperimentConfig, limit: int, out: Path
) -> pl.DataFrame:
    """The sanity checks on every patched item (the Hugging Face reference on
    ``patch.check_prompts`` of them); the last layer's resid_post run is reused from the
    resid_post site when that site patched the last layer."""
    prompt_ids = encode_prompts(models, items["question"].to_list(), cfg.prompt)
    last = models.n_layers - 1
    reuse = None
    site_dir = out / "sites" / "resid_post"
    if "resid_post" in cfg.patch.sites and site_done(site_dir):
        steps = pl.read_parquet(site_dir / "steps.parquet").filter(pl.col("layer") == last)
        texts = pl.read_parquet(site_dir / "texts.parquet").filter(pl.col("layer") == last)
        reuse = (steps, texts) if texts["prompt_id"].n_unique() == items.height else None
    identity = identity_targets(cfg.patch, models.n_layers) if cfg.patch.identity_check else []
    return sanity_checks(
        models,
        prompt_ids,
        limit,
        mode=cfg.patch.mode,
        last_layer=reuse,
        identity=identity,
        reference=spread(items.height, cfg.patch.check_prompts),
    )


def spread(n: int, k: int | None) -> list[int] | None:
    """``k`` of the indices 0..n-1, evenly spaced (first and last included); None: all."""
    if k is None or k >= n:
        return None
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def identity_targets(patch: PatchConfig, n_layers: int) -> list[tuple[str, int, int | None]]:
    """One (site, layer, head) per configured site: the middle of its layers, its first head."""
    layers = list(range(n_layers)) if patch.layers == "all" else sorted(patch.layers)
    layer = layers[len(layers) // 2]
    head = patch.heads[0] if isinstance(patch.heads, list) and patch.heads else 0
    return [(site, layer, head if site == "head" else None) for site in patch.sites]


def write_merged(
    out: Path,
    items: pl.DataFrame,
    sites: list[str],
    cfg: ExperimentConfig,
    clean: str,
    eval_dir: Path,
    spec: dict[str, Any],
    checks: pl.DataFrame,
) -> dict:
    """prompts/steps/texts over all sites (token text, suites, verdicts), Table 2, the CTS
    statistics, the checks and ``run.json``; returns the stage's facts."""
    from harness.pipeline.runner import write_json
    from harness.report.stats import cts_summary, table2_frame

    level, trust_remote_code = cfg.eval.level, cfg.models.trust_remote_code
    steps = [pl.read_parquet(out / "sites" / s / "steps.parquet") for s in sites]
    texts = [_finish_reasons(pl.read_parquet(out / "sites" / s / "texts.parquet")) for s in sites]
    if steps:
        steps_all = pl.concat(steps, how="diagonal_relaxed")
        steps_all = steps_all.with_columns(
            token=decode_tokens(clean, steps_all["token_id"], trust_remote_code)
        )
        steps_all = steps_all.join(items.select("prompt_id", "suite", "kind"), on="prompt_id")
        scorer = TaskScorer(plan_eval(cfg.eval)) if cfg.eval.tasks else None
        texts_all = score_texts(pl.concat(texts, how="diagonal_relaxed"), items, level, scorer)
    else:
        steps_all = pl.DataFrame(schema=EMPTY_STEPS_SCHEMA)
        texts_all = score_texts(pl.DataFrame(schema=TEXT_SCHEMA), items, level)
    checks = checks if checks.height else pl.DataFrame(schema=CHECK_SCHEMA)
    summary_path = eval_dir / "summary.parquet"
    summary = pl.read_parquet(summary_path) if summary_path.is_file() else None
    table2 = table2_frame(texts_all, summary, spec.get("model", CORRUPT_NAME))
    samples, seed = cfg.eval.bootstrap_samples, cfg.eval.seed
    cts = cts_summary(steps_all, samples, seed)
    model = pl.lit(spec.get("model", CORRUPT_NAME), pl.String).alias("model")  # whose patch
    write_parquet(items, out / "prompts.parquet")
    write_parquet(steps_all.with_columns(model), out / "steps.parquet")
    write_parquet(texts_all.with_columns(model), out / "texts.parquet")
    write_parquet(table2.with_columns(model), out / "table2.parquet")
    write_parquet(cts.with_columns(model), out / "cts_summary.parquet")
    write_parquet(checks, out / "checks.parquet")
    check_entries = checks_summary(checks)
    write_json(out / "run.json", spec | {"status": "success", "checks": check_entries})
    return {
        "prompts": items.height,
        "flagged": int((items["kind"] == "flagged").sum()),
        "trajectories": texts_all.height,
        "steps": steps_all.height,
        "max_new_tokens": spec["max_new_tokens"],
        "truncated": int((texts_all["verdict"] == "truncated").sum()),
        "patched_accuracy": None
        if texts_all["correct"].drop_nulls().is_empty()
        else float(texts_all["correct"].drop_nulls().mean()),
        "checks": {e["check"]: e["status"] for e in check_entries},
    }


EMPTY_STEPS_SCHEMA = {
    "prompt_id": pl.Int64,
    "site": pl.String,
    "layer": pl.Int64,
    "head": pl.Int64,
    "step": pl.Int64,
    "token_id": pl.Int64,
    "y_clean": pl.Int64,
    "y_corrupt": pl.Int64,
    "cts": pl.Float64,
    "kl_clean": pl.Float64,
    "kl_patch": pl.Float64,
    "kl_transfer": pl.Float64,
    "token": pl.String,
    "suite": pl.String,
    "kind": pl.String,
}


def _finish_reasons(texts: pl.DataFrame) -> pl.DataFrame:
    """A site's texts from before finish reasons were written: derived from the patcher's stop."""
    if "finish_reason" in texts.columns or "stop" not in texts.columns:
        return texts
    return texts.with_columns(
        pl.col("stop").replace_strict({"eos": "stop", "length": "length"}).alias("finish_reason"),
        pl.col("token_ids").list.len().cast(pl.Int64).alias("n_tokens"),
    ).drop("stop")


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
