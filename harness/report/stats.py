"""Table 2 and CTS statistics from the patch stage's tables: by prompt, never by step.

Intervals are by prompt: a prompt is the unit that was sampled, and the steps of one trajectory
are correlated. Patched accuracy (Table 2) gets a 95 % Wilson interval per layer (one patched
answer per prompt and layer; exact enough at 0 and 1, where a bootstrap collapses to a point).
The rule for "incorrect from layer L+": a layer is *incorrect* when the upper end of its
interval is below ``INCORRECT_BELOW`` (0.5: most patched answers are wrong, with 95 %
confidence), *correct* when the lower end is above it, else *undecided*; L is the first patched
layer from which every later patched layer is incorrect. CTS statistics resample prompts
(a cluster bootstrap of the step-weighted means), never steps. CTS is null where it is
undefined (clean and corrupted models agree on the next token); means are over defined steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl

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


def table2_frame(
    texts: pl.DataFrame, summary: pl.DataFrame | None = None, model: str = "corrupt"
) -> pl.DataFrame:
    """Table 2 as a tidy table: the evaluation's clean and corrupted accuracy per suite (the
    corrupted model named ``model`` in the summary), then patched accuracy per kind x suite x
    site x layer (x head) with its decision and the group's first incorrect layer."""
    rows = []
    for condition, name in (("clean", "clean"), ("corrupt", model)):
        sub = pl.DataFrame() if summary is None else summary.filter(pl.col("model") == name)
        for r in sub.iter_rows(named=True):
            rows.append(
                {
                    "condition": condition,
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
