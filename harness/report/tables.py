"""The report's data: a run's tables read from disk and the analyses drawn from them.

Everything here is polars in, polars (or plain dicts) out, so the figures and the page only lay
out numbers computed once. CTS is null where it is undefined (clean and corrupted models agree
on the next token); means are over defined steps only, with the defined fraction beside them.

Intervals are by prompt: a prompt is the unit that was sampled, and the steps of one trajectory
are correlated. Patched accuracy (Table 2) gets a 95 % Wilson interval per layer (one patched
answer per prompt and layer; exact enough at 0 and 1, where a bootstrap collapses to a point).
The rule for "incorrect from layer L+": a layer is *incorrect* when the upper end of its
interval is below ``INCORRECT_BELOW`` (0.5: most patched answers are wrong, with 95 %
confidence), *correct* when the lower end is above it, else *undecided*; L is the first patched
layer from which every later patched layer is incorrect. CTS statistics resample prompts
(a cluster bootstrap of the step-weighted means), never steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from harness.errors import HarnessError
from harness.fidelity import fidelity_of

SUITE_ORDER = ("related", "unrelated_math", "general")
SUITE_TITLES = {"related": "Related math", "unrelated_math": "Unrelated math", "general": "General"}
INCORRECT_BELOW = 0.5  # a layer is incorrect when its interval's upper end is below this
HIGH_CTS = 0.8
CTS_HALF = 0.5  # the robust CTS summary: the share of defined steps with CTS >= this
Z95 = 1.959963984540054
TABLE2_SCHEMA = {
    "condition": pl.String,  # clean | corrupt (the evaluation) | patched
    "kind": pl.String,  # all (every scored item of the suite) | flagged | control
    "suite": pl.String,
    "site": pl.String,
    "layer": pl.Int64,
    "head": pl.Int64,
    "n": pl.Int64,  # scored answers (one per prompt for patched rows; unscored left out)
    "correct": pl.Int64,
    "truncated": pl.Int64,
    "unscored": pl.Int64,
    "accuracy": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "interval": pl.String,  # wilson (by prompt) | bootstrap (the evaluation's summary)
    "decision": pl.String,  # patched rows: correct | incorrect | undecided
    "first_incorrect_layer": pl.Int64,  # per kind x suite x site x head, on each of its rows
}
CTS_SCHEMA = {
    "kind": pl.String,
    "suite": pl.String,
    "site": pl.String,
    "layer": pl.Int64,
    "head": pl.Int64,
    "prompts": pl.Int64,
    "steps": pl.Int64,
    "defined": pl.Int64,
    "defined_fraction": pl.Float64,
    "mean_cts": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "median_cts": pl.Float64,
    "high_share": pl.Float64,  # of defined steps, CTS >= CTS_HALF
    "mean_kl_transfer": pl.Float64,  # nats per step, every step (always defined)
    "kl_ci_low": pl.Float64,
    "kl_ci_high": pl.Float64,
    "kl_fraction": pl.Float64,  # sum kl_transfer / sum kl_clean: divergence transferred
}
STAGE_ORDER = ("finetune", "eval", "progression", "patch")  # the report is being written


@dataclass
class RunTables:
    """A run's tables as the stages wrote them; None where a stage did not run."""

    run_dir: Path
    name: str
    config: dict[str, Any]
    summary: pl.DataFrame  # eval: model, suite, n, accuracy, ci_low, ci_high
    flagged: pl.DataFrame  # eval: clean right, corrupted wrong
    items: pl.DataFrame | None = None  # patch/prompts.parquet: the patched items
    steps: pl.DataFrame | None = None  # patch/steps.parquet: CTS per layer and step
    texts: pl.DataFrame | None = None  # patch/texts.parquet: patched generations, verdict
    table2: pl.DataFrame | None = None  # patch/table2.parquet (computed when absent)
    cts: pl.DataFrame | None = None  # patch/cts_summary.parquet (computed when absent)
    patch_run: dict[str, Any] | None = None  # patch/run.json: token limits, checks
    metrics: pl.DataFrame | None = None  # finetune/metrics.parquet
    progression: pl.DataFrame | None = None  # progression/summary.parquet
    stages: dict[str, dict[str, Any]] | None = None  # stages/<name>.json markers
    fidelity: pl.DataFrame | None = None  # eval/fidelity_summary.parquet: corruption fidelity

    @property
    def suites(self) -> list[str]:
        present = set(self.summary["suite"].to_list())
        return [s for s in SUITE_ORDER if s in present] + sorted(present - set(SUITE_ORDER))


def _parquet(path: Path) -> pl.DataFrame | None:
    return pl.read_parquet(path) if path.is_file() else None


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_tables(run_dir: Path) -> RunTables:
    """Read a run directory; the evaluation must be complete, the other stages are optional."""
    import yaml

    from harness.evaluate import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HarnessError(f"{run_dir}: no such run directory")
    if not (run_dir / "eval" / "run.json").is_file():
        raise HarnessError(f"{run_dir}: no evaluation to report (expected {run_dir}/eval/run.json)")
    evaluation = load_run(run_dir / "eval")
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    patch_done = _stage_ok(run_dir, "patch") or (run_dir / "patch" / "texts.parquet").is_file()
    progression = _json(run_dir / "progression" / "run.json") or {}
    markers = {p.stem: _json(p) or {} for p in (run_dir / "stages").glob("*.json")}
    stages = {name: markers[name] for name in STAGE_ORDER if name in markers}
    patch = run_dir / "patch"
    texts = _parquet(patch / "texts.parquet") if patch_done else None
    steps = _parquet(patch / "steps.parquet") if patch_done else None
    table2 = cts = None
    if texts is not None:
        table2 = _parquet(patch / "table2.parquet")
        table2 = table2 if table2 is not None else table2_frame(texts, evaluation.summary)
    if steps is not None:
        cts = _parquet(patch / "cts_summary.parquet")
        cts = cts if cts is not None else cts_summary(steps, samples=200)
    return RunTables(
        run_dir=run_dir,
        name=(config or {}).get("name", run_dir.name),
        config=config or {},
        summary=evaluation.summary,
        flagged=evaluation.flagged,
        items=_parquet(patch / "prompts.parquet") if patch_done else None,
        steps=steps,
        texts=texts,
        table2=table2,
        cts=cts,
        patch_run=_json(patch / "run.json") if patch_done else None,
        metrics=_parquet(run_dir / "finetune" / "metrics.parquet"),
        progression=_parquet(run_dir / "progression" / "summary.parquet")
        if progression.get("status") == "success"
        else None,
        stages=stages,
        fidelity=_parquet(run_dir / "eval" / "fidelity_summary.parquet"),
    )


def _stage_ok(run_dir: Path, name: str) -> bool:
    return (_json(run_dir / "stages" / f"{name}.json") or {}).get("status") == "success"


def accuracy_of(summary: pl.DataFrame, model: str) -> dict[str, float]:
    rows = summary.filter(pl.col("model") == model)
    return dict(zip(rows["suite"].to_list(), rows["accuracy"].to_list(), strict=True))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion k/n; None without data."""
    if n == 0:
        return None, None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends, not rounding residue
    high = 1.0 if k == n else min(1.0, centre + half)
    return float(low), float(high)


def with_verdict(texts: pl.DataFrame) -> pl.DataFrame:
    """Texts scored before verdicts existed: correct/wrong from ``correct``."""
    if "verdict" in texts.columns:
        return texts
    verdict = pl.when(pl.col("correct")).then(pl.lit("correct")).otherwise(pl.lit("wrong"))
    return texts.with_columns(
        pl.when(pl.col("correct").is_null())
        .then(pl.lit("unscored"))
        .otherwise(verdict)
        .alias("verdict")
    )


def decision(low: float | None, high: float | None) -> str:
    """A patched layer's verdict from its interval (see the module's rule)."""
    if high is not None and high < INCORRECT_BELOW:
        return "incorrect"
    if low is not None and low > INCORRECT_BELOW:
        return "correct"
    return "undecided"


def first_incorrect_layer(layers: Iterable[int], decisions: Iterable[str]) -> int | None:
    """The first layer from which every later layer's decision is "incorrect" to the end."""
    first = None
    for layer, said in sorted(zip(layers, decisions, strict=True)):
        first = (layer if first is None else first) if said == "incorrect" else None
    return first


def patched_by_layer(texts: pl.DataFrame) -> pl.DataFrame:
    """Patched accuracy per kind x suite x site x layer (x head), with Wilson intervals."""
    keys = ["kind", "suite", "site", "layer", "head"]
    counted = (
        with_verdict(texts)
        .group_by(keys)
        .agg(
            (pl.col("verdict") != "unscored").sum().cast(pl.Int64).alias("n"),
            (pl.col("verdict") == "correct").sum().cast(pl.Int64).alias("correct"),
            (pl.col("verdict") == "truncated").sum().cast(pl.Int64).alias("truncated"),
            (pl.col("verdict") == "unscored").sum().cast(pl.Int64).alias("unscored"),
        )
        .sort(keys, nulls_last=False)
    )
    rows = []
    for row in counted.iter_rows(named=True):
        low, high = wilson(row["correct"], row["n"])
        accuracy = row["correct"] / row["n"] if row["n"] else None
        rows.append(row | {"accuracy": accuracy, "ci_low": low, "ci_high": high})
    schema = {k: TABLE2_SCHEMA[k] for k in keys} | {
        k: TABLE2_SCHEMA[k]
        for k in ("n", "correct", "truncated", "unscored", "accuracy", "ci_low", "ci_high")
    }
    table = pl.DataFrame(rows, schema=schema)
    return table.with_columns(
        pl.struct("ci_low", "ci_high")
        .map_elements(lambda r: decision(r["ci_low"], r["ci_high"]), return_dtype=pl.String)
        .alias("decision")
    )


def table2_frame(texts: pl.DataFrame, summary: pl.DataFrame | None = None) -> pl.DataFrame:
    """Table 2 as a tidy table: the evaluation's clean and corrupted accuracy per suite, then
    patched accuracy per kind x suite x site x layer (x head) with its decision and the group's
    first incorrect layer."""
    rows = []
    for model in ("clean", "corrupt"):
        sub = pl.DataFrame() if summary is None else summary.filter(pl.col("model") == model)
        for r in sub.iter_rows(named=True):
            rows.append(
                {
                    "condition": model,
                    "kind": "all",
                    "suite": r["suite"],
                    "n": r["n"],
                    "accuracy": r["accuracy"],
                    "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"],
                    "interval": "bootstrap",
                }
            )
    evaluation = pl.DataFrame(rows, schema=TABLE2_SCHEMA)
    if texts.is_empty():
        return evaluation
    layers = patched_by_layer(texts)
    group = ["kind", "suite", "site", "head"]
    firsts = pl.DataFrame(
        [
            dict(zip(group, key, strict=True))
            | {"first_incorrect_layer": first_incorrect_layer(g["layer"], g["decision"])}
            for key, g in layers.group_by(group, maintain_order=True)
        ],
        schema={k: TABLE2_SCHEMA[k] for k in [*group, "first_incorrect_layer"]},
    )
    patched = layers.join(firsts, on=group, nulls_equal=True).with_columns(
        condition=pl.lit("patched"), interval=pl.lit("wilson")
    )
    patched = patched.select(list(TABLE2_SCHEMA)).cast(TABLE2_SCHEMA)
    kind_rank = pl.col("kind").replace_strict({"flagged": 0, "control": 1}, default=2)
    patched = patched.sort(["site", kind_rank, "suite", "head", "layer"], nulls_last=False)
    return pl.concat([evaluation, patched])


def patched_summary(table2: pl.DataFrame) -> pl.DataFrame:
    """Per kind x suite x site (whole-layer patches): prompts, layers, accuracy averaged over
    layers, accuracy and interval at the first and last patched layer, truncated share, and the
    first incorrect layer."""
    patched = table2.filter((pl.col("condition") == "patched") & pl.col("head").is_null())
    rows = []
    for (kind, suite, site), group in patched.group_by(
        "kind", "suite", "site", maintain_order=True
    ):
        g = group.sort("layer")
        first, last = g.row(0, named=True), g.row(-1, named=True)
        answers = int(g["n"].sum() + g["unscored"].sum())
        rows.append(
            {
                "kind": kind,
                "suite": suite,
                "site": site,
                "prompts": int((g["n"] + g["unscored"]).max()),
                "layers": g.height,
                "accuracy": float(g["correct"].sum() / g["n"].sum()) if g["n"].sum() else None,
                "first_layer": first["layer"],
                "first_layer_accuracy": first["accuracy"],
                "first_layer_ci": [first["ci_low"], first["ci_high"]],
                "last_layer": last["layer"],
                "last_layer_accuracy": last["accuracy"],
                "last_layer_ci": [last["ci_low"], last["ci_high"]],
                "last_layer_decision": last["decision"],
                "truncated_share": float(g["truncated"].sum() / answers) if answers else 0.0,
                "first_incorrect_layer": first["first_incorrect_layer"],
            }
        )
    schema = {
        "kind": pl.String,
        "suite": pl.String,
        "site": pl.String,
        "prompts": pl.Int64,
        "layers": pl.Int64,
        "accuracy": pl.Float64,
        "first_layer": pl.Int64,
        "first_layer_accuracy": pl.Float64,
        "first_layer_ci": pl.List(pl.Float64),
        "last_layer": pl.Int64,
        "last_layer_accuracy": pl.Float64,
        "last_layer_ci": pl.List(pl.Float64),
        "last_layer_decision": pl.String,
        "truncated_share": pl.Float64,
        "first_incorrect_layer": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema).sort("site", "kind", "suite")


def cts_summary(steps: pl.DataFrame, samples: int = 1000, seed: int = 0) -> pl.DataFrame:
    """CTS and KL transfer per kind x suite x site x layer x head, intervals over prompts.

    Per group: the mean over defined steps with a 95 % cluster-bootstrap interval (prompts are
    resampled with all their steps), the median and the share of defined steps with CTS >= 0.5
    (robust to near-ties, where |CTS| is unbounded), the defined fraction, and ``kl_transfer``
    (defined on every step) with its interval and the fraction of divergence transferred.
    """
    if steps.is_empty():
        return pl.DataFrame(schema=CTS_SCHEMA)
    if "kl_transfer" not in steps.columns:  # tables from before the KL measure
        steps = steps.with_columns(kl_transfer=pl.lit(None, pl.Float64))
    if "kl_clean" not in steps.columns:
        steps = steps.with_columns(kl_clean=pl.lit(None, pl.Float64))
    keys = ["kind", "suite", "site", "layer", "head"]
    points = steps.group_by(keys).agg(
        pl.col("prompt_id").n_unique().cast(pl.Int64).alias("prompts"),
        pl.len().cast(pl.Int64).alias("steps"),
        pl.col("cts").count().cast(pl.Int64).alias("defined"),
        pl.col("cts").median().alias("median_cts"),
        (pl.col("cts") >= CTS_HALF).sum().alias("_high"),
        (pl.col("kl_transfer").sum() / pl.col("kl_clean").sum()).alias("kl_fraction"),
    )
    points = points.with_columns(
        (pl.col("defined") / pl.col("steps")).alias("defined_fraction"),
        pl.when(pl.col("defined") > 0)
        .then(pl.col("_high") / pl.col("defined"))
        .alias("high_share"),
    ).drop("_high")
    per_prompt = steps.group_by([*keys, "prompt_id"]).agg(
        pl.col("cts").sum().alias("s"),
        pl.col("cts").count().alias("c"),
        pl.col("kl_transfer").sum().alias("k"),
        pl.col("kl_transfer").count().alias("m"),
    )
    rng_rows = []
    for _, block in per_prompt.group_by(["kind", "suite", "site"], maintain_order=True):
        rng_rows += _cluster_bootstrap(block, keys, samples, seed)
    boot = pl.DataFrame(
        rng_rows,
        schema={k: CTS_SCHEMA[k] for k in keys}
        | {k: pl.Float64 for k in ("mean_cts", "ci_low", "ci_high")}
        | {k: pl.Float64 for k in ("mean_kl_transfer", "kl_ci_low", "kl_ci_high")},
    )
    table = points.join(boot, on=keys, nulls_equal=True)
    return table.select(list(CTS_SCHEMA)).cast(CTS_SCHEMA).sort(keys, nulls_last=False)


def _cluster_bootstrap(
    block: pl.DataFrame, keys: list[str], samples: int, seed: int
) -> list[dict[str, Any]]:
    """Means of one kind x suite x site block and their intervals, resampling its prompts.

    Every group (layer, head) of the block has the same prompts, so one set of resampling
    weights (how often each prompt is drawn) serves them all: mean_b = (W @ sums) / (W @ counts).
    """
    prompts = sorted(block["prompt_id"].unique().to_list())
    index = {p: i for i, p in enumerate(prompts)}
    groups = block.select(keys).unique(maintain_order=True).rows()
    where = {g: j for j, g in enumerate(groups)}
    shape = (len(prompts), len(groups))
    mats = {name: np.zeros(shape) for name in ("s", "c", "k", "m")}
    for row in block.iter_rows(named=True):
        i, j = index[row["prompt_id"]], where[tuple(row[k] for k in keys)]
        for name in mats:
            mats[name][i, j] = row[name] or 0.0
    weights = np.random.default_rng(seed).multinomial(
        len(prompts), np.full(len(prompts), 1 / len(prompts)), size=max(samples, 1)
    )

    def ratio(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            point = num.sum(0) / den.sum(0)
            boot = (weights @ num) / (weights @ den)
        return np.where(den.sum(0) > 0, point, np.nan), boot

    tail = (1 - 0.95) / 2 * 100
    cts, cts_boot = ratio(mats["s"], mats["c"])
    kl, kl_boot = ratio(mats["k"], mats["m"])
    out = []
    for j, group in enumerate(groups):
        entry = dict(zip(keys, group, strict=True))
        for name, point, boot, lo, hi in (
            ("mean_cts", cts, cts_boot, "ci_low", "ci_high"),
            ("mean_kl_transfer", kl, kl_boot, "kl_ci_low", "kl_ci_high"),
        ):
            finite = boot[:, j][np.isfinite(boot[:, j])]
            defined = np.isfinite(point[j])
            entry[name] = float(point[j]) if defined else None
            entry[lo], entry[hi] = (
                [float(v) for v in np.percentile(finite, [tail, 100 - tail])]
                if defined and samples and finite.size
                else (None, None)
            )
        out.append(entry)
    return out


def top_tokens(steps: pl.DataFrame, k: int = 15, min_count: int = 3) -> pl.DataFrame:
    """Generated tokens ranked by mean CTS over their defined steps (all prompts and layers)."""
    defined = steps.filter(pl.col("cts").is_not_null()).with_columns(
        pl.col("token").str.strip_chars().alias("token")
    )
    defined = defined.filter(pl.col("token") != "")
    if defined.is_empty():
        return pl.DataFrame(
            schema={
                "token": pl.String,
                "n": pl.Int64,
                "mean_cts": pl.Float64,
                "high_share": pl.Float64,
                "best_layer": pl.Int64,
                "suites": pl.String,
            }
        )
    per_layer = (
        defined.group_by("token", "layer")
        .agg(pl.col("cts").mean().alias("m"))
        .sort("m", descending=True)
        .group_by("token", maintain_order=True)
        .agg(pl.col("layer").first().alias("best_layer"))
    )
    table = (
        defined.group_by("token")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("cts").mean().alias("mean_cts"),
            (pl.col("cts") >= HIGH_CTS).mean().alias("high_share"),
            pl.col("suite").unique().sort().str.join(", ").alias("suites"),
        )
        .join(per_layer, on="token")
    )
    enough = table.filter(pl.col("n") >= min_count)
    table = enough if enough.height else table
    return (
        table.sort(["mean_cts", "n"], descending=True)
        .head(k)
        .select("token", "n", "mean_cts", "high_share", "best_layer", "suites")
    )


def summary_json(tables: RunTables, seconds: float | None = None) -> dict[str, Any]:
    """The headline figures: accuracy per model and suite, flagged, patched, checks, seconds.

    ``patched.by_suite[kind][suite][site]``: prompts, layers, accuracy (averaged over layers),
    accuracy with its 95 % interval at the first and last layer, truncated share and the first
    incorrect layer. ``checks``: each sanity check's status; ``checks_passed`` False when any
    failed (None when no check ran).
    """
    flagged = tables.flagged.filter(pl.col("model") == "corrupt")
    patched: dict[str, Any] = {"prompts": 0, "by_suite": {}}
    if tables.texts is not None and tables.items is not None:
        patched["prompts"] = tables.items.height
        patched["flagged_prompts"] = int((tables.items["kind"] == "flagged").sum())
        patched["control_prompts"] = int((tables.items["kind"] == "control").sum())
        patched["sites"] = tables.texts["site"].unique().sort().to_list()
        table2 = tables.table2 if tables.table2 is not None else table2_frame(tables.texts)
        for row in patched_summary(table2).iter_rows(named=True):
            entry = {k: v for k, v in row.items() if k not in ("kind", "suite", "site")}
            patched["by_suite"].setdefault(row["kind"], {}).setdefault(row["suite"], {})[
                row["site"]
            ] = entry
    limits = tables.patch_run or {}
    if "max_new_tokens" in limits:
        patched["max_new_tokens"] = limits["max_new_tokens"]
        patched["eval_max_new_tokens"] = limits.get("eval_max_new_tokens")
    if tables.steps is not None and tables.steps.height:
        patched["cts_defined_fraction"] = float(tables.steps["cts"].is_not_null().mean())
        patched["cts_by_kind"] = cts_by_kind(tables.steps)
    checks = (tables.patch_run or {}).get("checks")
    statuses = [c["status"] for c in checks or []]
    stage_seconds = {
        name: marker.get("seconds")
        for name, marker in (tables.stages or {}).items()
        if marker.get("status") == "success"
    }
    total = seconds if seconds is not None else sum(s or 0.0 for s in stage_seconds.values())
    return {
        "version": 1,
        "run": tables.name,
        "accuracy": {
            model: accuracy_of(tables.summary, model)
            for model in tables.summary["model"].unique(maintain_order=True).to_list()
        },
        "fidelity": {
            model: fidelity_of(tables.fidelity, model)
            for model in tables.summary["model"].unique(maintain_order=True).to_list()
        },
        "flagged": flagged.height,
        "flagged_by_suite": dict(flagged.group_by("suite").len().iter_rows()),
        "patched": patched,
        "checks": checks,
        "checks_passed": None if not statuses else "failed" not in statuses,
        "seconds": round(total, 1),
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items() if v is not None},
    }


def cts_by_kind(steps: pl.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """Per kind and site, over every layer and prompt: defined fraction, mean (defined steps),
    median and share >= 0.5 of CTS, mean ``kl_transfer``; headline figures, not the analysis."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    has_kl = "kl_transfer" in steps.columns
    for (kind, site), g in steps.group_by("kind", "site", maintain_order=True):
        defined = g["cts"].drop_nulls()
        out.setdefault(kind, {})[site] = {
            "steps": g.height,
            "defined_fraction": defined.len() / g.height,
            "mean_cts": defined.mean() if defined.len() else None,
            "median_cts": defined.median() if defined.len() else None,
            "high_share": float((defined >= CTS_HALF).mean()) if defined.len() else None,
            "mean_kl_transfer": g["kl_transfer"].mean() if has_kl else None,
        }
    return out
