"""``harness report RUN``: report.html, figures/*.png and summary.json from a run's tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from harness.report import figures, interactive, page
from harness.report.page import esc, fmt
from harness.report.tables import (
    RunTables,
    accuracy_of,
    layer_cts,
    load_tables,
    patched_by_layer,
    patched_summary,
    summary_json,
    top_tokens,
)

REPORT = "report.html"
SUMMARY = "summary.json"
FIGURES = "figures"


@dataclass
class ReportOutputs:
    html: Path
    summary_path: Path
    summary: dict[str, Any]
    figures: list[Path] = field(default_factory=list)


def build_report(run_dir: Path, seconds: float | None = None) -> ReportOutputs:
    """Read the run's tables, draw the figures, write the page and the headline figures."""
    from harness.pipeline.runner import atomic_write_text, write_json

    tables = load_tables(Path(run_dir))
    out = tables.run_dir
    pngs: list[Path] = []
    sections = [header(tables)]
    sections += behaviour(tables, out / FIGURES, pngs)
    sections += mechanism(tables, out / FIGURES, pngs)
    sections += training(tables, out / FIGURES, pngs)
    sections.append(files_section(tables, pngs))
    summary = summary_json(tables, seconds)
    atomic_write_text(out / REPORT, page.document(f"CMAP report: {tables.name}", sections))
    write_json(out / SUMMARY, summary)
    return ReportOutputs(out / REPORT, out / SUMMARY, summary, pngs)


def header(t: RunTables) -> str:
    models = t.config.get("models", {})
    corrupt = models.get("corrupt") or "fine-tuned in this run (finetune/)"
    ev = t.config.get("eval", {})
    stage_rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{esc(m.get('status'))}</td>"
        f"<td>{fmt(m.get('seconds'), 1)}</td><td>{esc(m.get('finished'))}</td></tr>"
        for name, m in (t.stages or {}).items()
    )
    stages = (
        "<table><thead><tr><th>stage</th><th>status</th><th>seconds</th><th>finished</th>"
        f"</tr></thead><tbody>{stage_rows}</tbody></table>"
        if stage_rows
        else ""
    )
    limit = ev.get("limit")
    documents = f"limit {esc(limit)} documents per task" if limit else "every document"
    return (
        f"<h1>CMAP report: {esc(t.name)}</h1>"
        f"<p class='note'>clean model <code>{esc(models.get('clean'))}</code> · corrupted model "
        f"<code>{esc(corrupt)}</code> · evaluation engine {esc(ev.get('engine'))}, level "
        f"{esc(ev.get('level'))}, {documents}</p>{stages}"
    )


def _cell(acc: float | None, n: int | None = None) -> str:
    if acc is None:
        return "&ndash;"
    return f"{acc:.2f}" + (f" <span class='muted'>(n={n})</span>" if n is not None else "")


def table2_rows(t: RunTables, patched: pl.DataFrame | None) -> list[tuple[str, dict[str, str]]]:
    """Clean and corrupted accuracy per suite, then patched accuracy per site and kind."""
    rows = []
    for model, label in (("clean", "Clean"), ("corrupt", "Corrupted")):
        sub = t.summary.filter(pl.col("model") == model)
        rows.append(
            (label, {r["suite"]: _cell(r["accuracy"], r["n"]) for r in sub.iter_rows(named=True)})
        )
    if patched is None or patched.is_empty():
        return rows
    flagged_first = patched.sort("site", pl.col("kind") != "flagged")
    for (site, kind), group in flagged_first.group_by("site", "kind", maintain_order=True):
        cells = {}
        for r in group.iter_rows(named=True):
            first = r["first_incorrect_layer"]
            turn = (
                f"<br><b>incorrect from layer {first}+</b>"
                if first is not None
                else "<br>correct at the last layer"
            )
            cells[r["suite"]] = (
                f"{r['accuracy']:.2f} <span class='muted'>({r['prompts']} prompts &times; "
                f"{r['layers']} layers)</span>{turn}"
            )
        what = (
            "flagged: clean right, corrupted wrong" if kind == "flagged" else "control: both right"
        )
        rows.append((f"Patched, {site} ({what})", cells))
    return rows


def behaviour(t: RunTables, fig_dir: Path, pngs: list[Path]) -> list[str]:
    suites = t.suites
    patched = patched_summary(t.texts) if t.texts is not None and t.texts.height else None
    out = [
        "<h2>Behaviour: where the corrupted model fails (Table 2)</h2>",
        "<p class='note'>Accuracy of greedy answers per suite. Patched: the clean model with the "
        "corrupted model's activation at one layer (last position, every generated token), scored "
        "by the suite's checker, averaged over prompts and layers; <i>incorrect from layer L+</i> "
        "means the patched accuracy stays below 0.5 from layer L to the last layer.</p>",
        page.table2(table2_rows(t, patched), suites),
    ]
    bars = [
        ("clean", accuracy_of(t.summary, "clean")),
        ("corrupted", accuracy_of(t.summary, "corrupt")),
    ]
    if patched is not None:
        for (site, kind), g in patched.group_by("site", "kind", maintain_order=True):
            bars.append(
                (f"patched {site} ({kind})", dict(zip(g["suite"], g["accuracy"], strict=True)))
            )
    pngs.append(figures.accuracy_figure(bars, suites, fig_dir / "accuracy.png"))
    n_flagged = t.flagged.filter(pl.col("model") == "corrupt").height
    ci = t.summary.select("model", "suite", "n", "accuracy", "ci_low", "ci_high")
    flagged = t.flagged.group_by("model", "suite").len("flagged").sort("model", "suite")
    out += [
        "<details><summary>accuracy with 95% bootstrap intervals, every model</summary>",
        page.table(ci),
        "</details>",
        f"<p>Flagged (clean right, corrupted wrong): <b>{n_flagged}</b> items.</p>",
        page.table(flagged) if flagged.height else "",
    ]
    if t.texts is not None and t.texts.height:
        by_layer = patched_by_layer(t.texts).filter(pl.col("head").is_null())
        wide = by_layer.with_columns(pl.format("L{}", "layer").alias("col")).pivot(
            "col", index=["site", "kind", "suite"], values="accuracy"
        )
        out += ["<h3>Patched accuracy per layer</h3>", page.table(wide, 2)]
    return out


def mechanism(t: RunTables, fig_dir: Path, pngs: list[Path]) -> list[str]:
    out = ["<h2>Mechanism: which layers carry the corruption (CTS)</h2>"]
    if t.steps is None or t.items is None:
        return [*out, "<p class='muted'>The patch stage has not run.</p>"]
    if t.steps.is_empty():
        return [
            *out,
            "<p class='muted'>No prompt was patched: nothing was flagged and no control item "
            "was available.</p>",
        ]
    defined = t.steps["cts"].is_not_null().mean()
    out.append(
        "<p class='note'>CTS = (Δ<sub>patch</sub> &minus; Δ<sub>clean</sub>) / "
        "(Δ<sub>corrupt</sub> &minus; Δ<sub>clean</sub>) with Δ = logit[y<sub>corrupt</sub>] "
        "&minus; logit[y<sub>clean</sub>]: 1 means the patch moves the clean model all the way "
        "to the corrupted model's preference. It is undefined where both models pick the same "
        "next token; here it is defined on "
        f"<b>{defined:.1%}</b> of {t.steps.height} steps. Means are over defined steps only.</p>"
    )
    layers = layer_cts(t.steps)
    pngs.append(figures.cts_by_layer_figure(layers, fig_dir / "cts_by_layer.png"))
    out += [
        "<h3>Mean CTS per layer and suite</h3>",
        page.figure_div(interactive.cts_by_layer(layers), "cts-by-layer"),
        "<details><summary>table</summary>",
        page.table(layers),
        "</details>",
        "<h3>Tokens with the highest CTS</h3>",
        "<p class='note'>Generated tokens across prompts and layers, by mean CTS over their "
        "defined steps (tokens seen at least 3 times when there are enough); high share: "
        "CTS ≥ 0.8.</p>",
        page.table(top_tokens(t.steps)),
        "<h3>CTS heatmaps</h3>",
        "<p class='note'>Rows: patched layer; columns: generation step. Hover shows the token the "
        "patched model generated there and its CTS. Grey: CTS undefined (the models agree); "
        "white: that trajectory had already stopped.</p>",
    ]
    items = {r["prompt_id"]: r for r in t.items.iter_rows(named=True)}
    for (prompt_id, site), group in t.steps.group_by("prompt_id", "site", maintain_order=True):
        item = items[prompt_id]
        title = f"#{prompt_id} {item['suite']} ({item['kind']}), {site}: {item['question']}"
        short = title if len(title) <= 110 else title[:107] + "…"
        out.append(
            page.figure_div(interactive.heatmap(group, short), f"heatmap-{prompt_id}-{site}")
        )
        name = f"heatmap_p{prompt_id:03d}_{site}.png"
        pngs.append(figures.heatmap_figure(group, short, fig_dir / name))
    out += generations(t)
    return out


def generations(t: RunTables) -> list[str]:
    out = [
        "<h2>Generations side by side</h2>",
        "<p class='note'>Clean and corrupted answers from the evaluation; the patched answer at "
        "the first layer from which patching turns this item incorrect (else the last layer).</p>",
    ]
    for item in t.items.sort(
        "kind", "suite", "prompt_id", descending=[True, False, False]
    ).iter_rows(named=True):
        patched = t.texts.filter(pl.col("prompt_id") == item["prompt_id"])
        plain = patched.filter(pl.col("head").is_null())
        layer = _shown_layer(plain)
        out.append(page.generation_card(item, plain if plain.height else patched, layer))
    return out


def _shown_layer(patched: pl.DataFrame) -> int | None:
    from harness.report.tables import first_incorrect_layer

    if patched.is_empty():
        return None
    first_site = patched["site"][0]
    one = patched.filter(pl.col("site") == first_site).sort("layer")
    first = first_incorrect_layer(one["layer"].to_list(), one["correct"].cast(pl.Float64).to_list())
    return first if first is not None else one["layer"][-1]


def training(t: RunTables, fig_dir: Path, pngs: list[Path]) -> list[str]:
    out = ["<h2>Fine-tuning and the corruption's progression</h2>"]
    if t.metrics is None or t.metrics.is_empty():
        return [*out, "<p class='muted'>This run did not fine-tune (models.corrupt was given).</p>"]
    pngs.append(figures.training_figure(t.metrics, fig_dir / "training.png"))
    out += [
        "<p class='note'>Train loss on the corrupted data, eval loss on correct held-out data, "
        "divergence = eval &minus; train.</p>",
        page.figure_div(interactive.training(t.metrics), "training"),
    ]
    if t.progression is None or t.progression.is_empty():
        out.append(
            "<p class='muted'>No checkpoint evaluation: set <code>finetune.save_every</code> to "
            "save checkpoints, which the progression stage evaluates.</p>"
        )
        return out
    prog = progression_table(t.progression)
    pngs.append(figures.progression_figure(prog, fig_dir / "progression.png"))
    out += [
        "<h3>Suite accuracy along training</h3>",
        "<p class='note'>Each saved checkpoint evaluated on a small sample per task (step 0 is "
        "the clean model).</p>",
        page.figure_div(interactive.progression(prog), "progression"),
        page.table(prog.select("step", "suite", "n", "accuracy").sort("step", "suite")),
    ]
    return out


def progression_table(summary: pl.DataFrame) -> pl.DataFrame:
    """The checkpoint evaluation's summary with the optimizer step of each model."""
    step = (
        pl.when(pl.col("model") == "clean")
        .then(pl.lit("0"))
        .otherwise(pl.col("model").str.extract(r"step-0*(\d+)$"))
        .cast(pl.Int64, strict=False)
    )
    return summary.with_columns(step.alias("step")).filter(pl.col("step").is_not_null())


def files_section(t: RunTables, pngs: list[Path]) -> str:
    links = "".join(
        f"<li><a href='{esc(p.relative_to(t.run_dir))}'>{esc(p.relative_to(t.run_dir))}</a></li>"
        for p in pngs
    )
    tables = [
        p.relative_to(t.run_dir)
        for p in sorted(t.run_dir.glob("*/*.parquet"))
        if p.parent.name in ("eval", "patch", "finetune", "progression")
    ]
    table_links = "".join(f"<li><a href='{esc(p)}'>{esc(p)}</a></li>" for p in tables)
    return (
        "<h2>Files</h2><p class='note'>Figures for papers (PNG) and the tables this page was drawn "
        f"from (parquet).</p><ul>{links}</ul><ul>{table_links}</ul>"
        "<p class='note'>Headline figures: <a href='summary.json'>summary.json</a>.</p>"
    )
