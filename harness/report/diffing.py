"""The report's model-diffing section, drawn from ``<run>/analyze/`` (the analyze stage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from harness.report import diffing_figures
from harness.report.page import esc, fmt, suite_title, table

ANALYZE = "analyze"
FIGURES = {
    "divergence": diffing_figures.divergence_figure,
    "lens": diffing_figures.lens_figure,
    "similarity": diffing_figures.similarity_figure,
    "probes": diffing_figures.probes_figure,
    "steering": diffing_figures.steering_figure,
    "attribution": diffing_figures.attribution_figure,
}
FIGURE_FILES = {"attribution": "head_attribution.png"}


def analyze_tables(run_dir: Path) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """The analyze stage's tables by name, and its analyze.json ({} where it did not run)."""
    out = Path(run_dir) / ANALYZE
    try:
        meta = json.loads((out / "analyze.json").read_text())
    except (OSError, ValueError):
        return {}, {}
    return {p.stem: pl.read_parquet(p) for p in sorted(out.glob("*.parquet"))}, meta


def diffing_section(run_dir: Path, fig_dir: Path, pngs: list[Path]) -> list[str]:
    tables, meta = analyze_tables(run_dir)
    if not meta:
        return []
    if not meta.get("items"):
        return ["<h2>Model diffing</h2><p class='note'>No patched items, so nothing to analyse."
                "</p>"]  # fmt: skip
    seconds = meta.get("seconds", {})
    timing = ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
    parts = [
        "<h2>Model diffing</h2>",
        f"<p class='note'>{meta['items']} items (flagged and controls of every suite), layers "
        f"{esc(meta['layers'][0])}..{esc(meta['layers'][-1])}; "
        f"{fmt(sum(seconds.values()), 1)} s ({esc(timing)}). "
        "Command: <code>harness analyze RUN_DIR</code>.</p>",
    ]
    parts += _headline(meta.get("headline", {}))
    for name, draw in (
        ("divergence", _divergence),
        ("lens", _lens),
        ("similarity", _similarity),
        ("probes", _probes),
        ("steering", _directions),
        ("attribution", _attribution),
    ):
        if name in tables and tables[name].height:
            heading, *rest = draw(tables[name], tables)
            fig_dir.mkdir(parents=True, exist_ok=True)
            png = FIGURES[name](
                tables[name], fig_dir / FIGURE_FILES.get(name, f"diffing_{name}.png")
            )
            pngs.append(png)
            parts += [heading, f"<img src='figures/{png.name}' alt='{name} figure'>", *rest]
    return parts


def _headline(head: dict[str, Any]) -> list[str]:
    lines = []
    for what, verb in (("steer", "transfers"), ("ablate", "repairs")):
        if (entry := head.get("directions", {}).get(what)) is not None:
            model = "the clean model" if what == "steer" else "the corrupted model"
            action = (
                f"added at alpha {fmt(entry['alpha'], 2)} to"
                if what == "steer"
                else "projected out of"
            )
            effect = "answers with the trained error" if what == "steer" else "answers right"
            lines.append(
                f"One direction at layer {entry['layer']}, {action} {model}, {verb} "
                f"{fmt(entry[verb], 2)} of the corruption ({effect}; accuracy "
                f"{fmt(entry.get('accuracy'), 2)}) on {entry['items']} held-out flagged related "
                "items."
            )
    if (top := head.get("top_head")) is not None:
        rho = head.get("attribution_spearman")
        lines.append(
            f"Attribution patching ranks head L{top['layer']}.h{top['head']} first "
            f"(estimated CTS {fmt(top['atp_cts'], 2)})"
            + (
                f"; rank agreement with exact patching on the top heads: Spearman {fmt(rho, 2)}."
                if rho is not None
                else "."
            )
        )
    return [f"<p>{esc(line)}</p>" for line in lines]


def _divergence(div: pl.DataFrame, _: dict) -> list[str]:
    first = (
        div.filter(pl.col("disagree") & (pl.col("response") == "clean"))
        .group_by("suite", "prompt_id").agg(pl.col("position").min())
        .group_by("suite").agg(first_divergent_position=pl.col("position").median())
    )  # fmt: skip
    by_suite = (
        div.group_by("suite")
        .agg(mean_kl=pl.col("kl").mean(), disagree=pl.col("disagree").mean(), tokens=pl.len())
        .join(first, on="suite", how="left")
        .sort("suite")
        .with_columns(pl.col("suite").map_elements(suite_title, return_dtype=pl.String))
    )
    top = (
        div.sort("kl", descending=True).head(12)
        .select("suite", "kind", "response", "position", "token", "kl")
    )  # fmt: skip
    return [
        "<h3>Where the models part (teacher-forced on both responses)</h3>",
        table(
            by_suite, headers={"mean_kl": "mean KL(corrupt || clean)", "disagree": "top-1 disagree"}
        ),
        "<p class='note'>Tokens of highest divergence:</p>",
        table(top),
    ]


def _lens(lens: pl.DataFrame, _: dict) -> list[str]:
    appears = (
        lens.filter((pl.col("token") == "y_corrupt") & (pl.col("rank") == 0))
        .group_by("model", "suite", "prompt_id").agg(pl.col("layer").min())
        .group_by("model", "suite").agg(first_layer_top1=pl.col("layer").median(), items=pl.len())
        .sort("model", "suite")
    )  # fmt: skip
    mean_rank = (
        lens.group_by("model", "token", "layer").agg(pl.col("rank").mean(), pl.col("prob").mean())
        .sort("model", "token", "layer")
    )  # fmt: skip
    return [
        "<h3>Logit lens at the first divergent step</h3>",
        "<p class='note'>The layer where y_corrupt becomes each model's top-1 under the lens "
        "(median over flagged items), and mean rank and probability per layer.</p>",
        table(appears),
        table(mean_rank),
    ]


def _similarity(sim: pl.DataFrame, _: dict) -> list[str]:
    resid = sim.filter(pl.col("site") == "resid_post").sort("suite", "layer")
    wide = resid.pivot(on="suite", index="layer", values="relative_change").sort("layer")
    cka = resid.pivot(on="suite", index="layer", values="cka").sort("layer")
    return [
        "<h3>Similarity per layer</h3>",
        "<p class='note'>Relative change ||h_corrupt - h_clean|| / ||h_clean|| of the residual "
        "by suite:</p>",
        table(wide, digits=4),
        "<p class='note'>Linear CKA between the two models' residuals by suite:</p>",
        table(cka, digits=4),
    ]


def _probes(probes: pl.DataFrame, _: dict) -> list[str]:
    wide = probes.pivot(on="suite", index="layer", values="accuracy").sort("layer")
    return [
        "<h3>Probes</h3>",
        "<p class='note'>Held-out accuracy of a logistic probe telling the corrupted model's "
        "residual from the clean one's on the same tokens (0.5 is chance; split by item).</p>",
        table(wide),
    ]


def _directions(steer: pl.DataFrame, tables: dict) -> list[str]:
    chosen = steer.filter(pl.col("chosen"))
    per = (
        chosen.group_by("intervention", "layer", "alpha", "items", "suite")
        .agg(accuracy=pl.col("correct").fill_null(False).mean(),
             trained_error=(pl.col("fidelity") == "trained_error").mean(), n=pl.len())
        .sort("intervention", "layer", "items", "suite")
    )  # fmt: skip
    parts = [
        "<h3>Difference directions: steering and ablation</h3>",
        "<p class='note'>Per layer, the mean of h_corrupt - h_clean over half of the flagged "
        "related items, at the step where the two models part; the clean model steered along "
        "it (alpha: the one giving the most trained-error answers on those items with the "
        "malformed share bounded) and the corrupted model with it projected out, scored by the "
        "suites' checker on the other half (held_out) and the control items.</p>",
        table(per),
    ]
    if "directions" in tables:
        parts.append(table(tables["directions"].with_columns(
            pl.col("top_tokens").list.join(" · "))))  # fmt: skip
    return parts


def _attribution(atp: pl.DataFrame, _: dict) -> list[str]:
    top = atp.filter(pl.col("exact_cts").is_not_null()).sort(
        pl.col("atp_cts").abs(), descending=True
    )
    return [
        "<h3>Every head screened by attribution patching, the top ones patched exactly</h3>",
        table(top.select("layer", "head", "atp_cts", "exact_cts", "steps")),
    ]
