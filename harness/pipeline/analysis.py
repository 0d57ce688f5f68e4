"""The analyze stage: the model-diffing analyses of ``patchers.analysis`` on the patched items.

Items are the patch stage's (``<run>/patch/prompts.parquet``: flagged and control items of every
suite, with both models' evaluated responses), at most ``analyze.max_items_per_suite`` per suite
and kind. Inputs are token ids of the shared ``PromptFormat``; the models are loaded as the
patch stage loads them (a LoRA pair shares its base). Writes tidy tables under
``<run>/analyze/``:

- ``divergence.parquet``: per response token (both models' responses, teacher-forced), the KL
  of the corrupted from the clean next-token distribution and whether their argmaxes differ;
- ``lens.parquet``: at each flagged item's first divergent step (the first position of the clean
  response where the argmaxes differ), per model and layer, the rank and probability of
  ``y_clean`` and ``y_corrupt`` under the logit lens;
- ``similarity.parquet``: per suite and layer, linear CKA, mean cosine and relative change of
  the residuals (``resid_post``), and the relative change per head (``head``);
- ``probes.parquet``: per suite and layer, a held-out probe's accuracy;
- ``directions.parquet``, ``steering.parquet``: per layer, the direction fitted on half of the
  flagged related items at their first divergent step (its norm and logit-lens tokens), and
  the accuracy and fidelity classes of the clean model steered along it (``alpha`` chosen on
  those items: the most trained-error answers, malformed answers bounded) and of the corrupted
  model with it ablated, on the other half and the control suites;
- ``attribution.parquet``: per layer and head, attribution patching's estimated CTS at the
  flagged items' first ``analyze.attribution_steps`` steps of the clean response where CTS is
  defined, and on the top-k heads the exact CTS of those steps, from the CMAP engine
  teacher-forced along the same responses;
- ``analyze.json``: the headline numbers and each analysis's seconds.
"""

import json
import time
from pathlib import Path
from typing import Any

import polars as pl

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.evaluate import write_parquet
from harness.pipeline.analysis_tables import headline
from harness.pipeline.analyzer import Analyzer, Item

ANALYSES = ("divergence", "lens", "similarity", "probes", "directions", "attribution")


def analyze_items(prompts: pl.DataFrame, limit: int | None) -> pl.DataFrame:
    """At most ``limit`` items per suite and kind, in the patch stage's order."""
    if limit is None:
        return prompts
    ranked = prompts.with_columns(pl.int_range(pl.len()).over("suite", "kind").alias("_rank"))
    return ranked.filter(pl.col("_rank") < limit).drop("_rank")


def run_analyze(
    cfg: ExperimentConfig,
    clean: str,
    corrupt: str,
    out: Path,
    say=print,
    patch_dir: Path | None = None,
) -> dict:
    """Run the switched-on analyses on the patch stage's items (``patch_dir``, default
    ``<run>/patch``); write the tables and ``analyze.json``; return what the stage reports."""
    from harness.errors import ConfigError
    from harness.patch import load_models
    from harness.pipeline.patching import device_for
    from harness.preflight import analyze_problems

    prompts_path = (patch_dir or cfg.run_dir / "patch") / "prompts.parquet"
    if not prompts_path.is_file():
        raise HarnessError(
            f"{prompts_path}: not found; the analyses run on the patch stage's items"
        )
    rows = analyze_items(pl.read_parquet(prompts_path), cfg.analyze.max_items_per_suite)
    problems = analyze_problems(cfg, clean)  # before the pair loads
    if problems:
        raise ConfigError("; ".join(problems))
    out.mkdir(parents=True, exist_ok=True)
    if not rows.height:  # nothing flagged, so no controls either: a result, not an error
        say("no patched items to analyse")
        summary = {"items": 0, "layers": [], "seconds": {}, "headline": {}}
        (out / "analyze.json").write_text(json.dumps(summary, indent=2))
        return summary
    models = load_models(
        clean,
        corrupt,
        dtype=cfg.patch.dtype,
        device=device_for(cfg.patch.device),
        trust_remote_code=cfg.models.trust_remote_code,
        device_map=cfg.patch.device_map,
    )
    items = [_item(models, cfg, row) for row in rows.iter_rows(named=True)]
    analyzer = Analyzer(models, items, cfg)
    tables: dict[str, pl.DataFrame] = {}
    seconds: dict[str, float] = {}
    for name in ANALYSES:
        if not getattr(cfg.analyze, name):
            continue
        say(f"{name} on {len(items)} items")
        started = time.perf_counter()
        tables |= getattr(analyzer, name)()
        seconds[name] = round(time.perf_counter() - started, 2)
    for name, table in tables.items():
        write_parquet(table, out / f"{name}.parquet")
    summary = {
        "items": len(items),
        "layers": analyzer.layers,
        "seconds": seconds,
        "headline": headline(tables),
    }
    (out / "analyze.json").write_text(json.dumps(summary, indent=2, default=_plain))
    return summary


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def _item(models, cfg: ExperimentConfig, row: dict) -> Item:
    tokenizer = models.tokenizer

    def tokens(text: str | None) -> list[int]:
        return tokenizer.encode(text or "", add_special_tokens=False)

    return Item(
        row,
        cfg.prompt.encode(tokenizer, row["question"]),
        tokens(row["clean_response"]),
        tokens(row["corrupt_response"]),
    )
