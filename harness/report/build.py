"""``harness report RUN``: report.html, figures/*.png and summary.json from a run's tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from harness.report import figures, interactive, page
from harness.report.diffing import analyze_tables, diffing_section
from harness.report.page import esc, fmt
from harness.report.stats import CTS_HALF, INCORRECT_BELOW, patched_summary, top_tokens
from harness.report.tables import (
    RunTables,
    accuracy_of,
    load_tables,
    summary_json,
    table1_frame,
    trigger_frame,
)

REPORT = "report.html"
SUMMARY = "summary.json"
FIGURES = "figures"
EXAMPLES_PER_GROUP = 3  # heatmaps and generation cards per kind x suite: the page stays small
LAYER_ACCURACY_COLUMNS = ["site", "kind", "suite", "layer", "n", "accuracy", "ci_low", "ci_high",
                          "truncated", "unscored", "decision"]  # fmt: skip
HEAD_ACCURACY_COLUMNS = ["kind", "suite", "layer", "head", "n", "accuracy", "ci_low", "ci_high",
                         "decision"]  # fmt: skip
CTS_COLUMNS = ["kind", "suite", "site", "layer", "prompts", "steps", "defined_fraction",
               "mean_cts", "ci_low", "ci_high", "median_cts", "high_share", "mean_kl_transfer",
               "kl_ci_low", "kl_ci_high"]  # fmt: skip
CTS_HEAD_COLUMNS = ["kind", "suite", "layer", "head", "defined_fraction", "mean_cts", "ci_low",
                    "ci_high", "median_cts", "high_share", "mean_kl_transfer"]  # fmt: skip


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
    sections = [header(tables), *checks_section(tables)]
    sections += table1_section(tables)
    sections += behaviour(tables, out / FIGURES, pngs)
    sections += other_table2s(tables)
    sections += fidelity_section(tables)
    sections += mechanism(tables, out / FIGURES, pngs)
    sections += diffing_section(out, out / FIGURES, pngs)
    sections += training(tables, out / FIGURES, pngs)
    sections.append(files_section(tables, pngs))
    summary = summary_json(tables, seconds)
    analyzed = analyze_tables(out)[1]
    if analyzed:
        summary["analyze"] = analyzed.get("headline", {}) | {"seconds": analyzed.get("seconds")}
    atomic_write_text(out / REPORT, page.document(f"CMAP report: {tables.name}", sections))
    write_json(out / SUMMARY, summary)
    return ReportOutputs(out / REPORT, out / SUMMARY, summary, pngs)


def header(t: RunTables) -> str:
    models = t.config.get("models", {})
    given = models.get("corrupt")
    if isinstance(given, dict):
        given = ", ".join(f"{name}: {ref}" for name, ref in given.items())
    corrupt = given or "fine-tuned in this run (finetune/)"
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


def checks_section(t: RunTables) -> list[str]:
    """The patch run's sanity checks in a box: red with every failure, green when all pass."""
    if t.texts is None:
        return []
    checks = (t.patch_run or {}).get("checks")
    if not checks:
        return [
            "<div class='box muted'>No sanity checks were recorded for this patch run (it "
            "predates them); re-run the patch stage to check it.</div>"
        ]
    failed = [c for c in checks if c["status"] == "failed"]
    items = []
    for c in checks:
        label = {"passed": "passed", "failed": "CHECK FAILED", "not_applicable": "not applicable"}
        line = f"<li><b>{label[c['status']]}</b>: {esc(c['title'])} "
        if c["status"] == "not_applicable":
            line += f"<span class='muted'>({esc(c.get('note'))})</span>"
        else:
            line += f"({c['of'] - c['failed']} of {c['of']} agree, {c['prompts']} prompts)"
        first = c.get("first_failure")
        if first:
            line += (
                f"<br>first failure: prompt #{first['prompt_id']}, {esc(first['site'])} layer "
                f"{first['layer']}, step {first['first_mismatch']}"
                f"<div class='grid2'><div><b>expected</b><pre>{esc(first['expected'])}</pre>"
                f"</div><div><b>got</b><pre>{esc(first['got'])}</pre></div></div>"
            )
        items.append(line + "</li>")
    if failed:
        return [
            "<div class='box alert'><h3>CHECK FAILED: the patch run does not reproduce the "
            "models, so its numbers below are not evidence</h3>"
            f"<ul>{''.join(items)}</ul></div>"
        ]
    return [f"<div class='box pass'><b>Sanity checks</b><ul>{''.join(items)}</ul></div>"]


def _interval(acc: float | None, low: float | None, high: float | None) -> str:
    if acc is None:
        return "&ndash;"
    ci = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{acc:.2f}<span class='muted'>{ci}</span>"


def _cell(acc: float | None, n: int | None = None, low=None, high=None) -> str:
    if acc is None:
        return "&ndash;"
    count = f" <span class='muted'>(n={n})</span>" if n is not None else ""
    return _interval(acc, low, high) + count


def table2_rows(t: RunTables, patched: pl.DataFrame | None) -> list[tuple[str, dict[str, str]]]:
    """Clean and corrupted accuracy per suite, then patched accuracy per site and kind."""
    rows = []
    for model, label in (("clean", "Clean"), (t.corrupt, "Corrupted")):
        sub = t.summary.filter(pl.col("model") == model)
        rows.append(
            (
                label,
                {
                    r["suite"]: _cell(r["accuracy"], r["n"], r.get("ci_low"), r.get("ci_high"))
                    for r in sub.iter_rows(named=True)
                },
            )
        )
    if patched is None or patched.is_empty():
        return rows
    flagged_first = patched.sort("site", pl.col("kind") != "flagged")
    for (site, kind), group in flagged_first.group_by("site", "kind", maintain_order=True):
        cells = {}
        for r in group.iter_rows(named=True):
            first = r["first_incorrect_layer"]
            turn = {
                "correct": "correct at the last layer",
                "undecided": f"undecided at the last layer (its interval spans {INCORRECT_BELOW})",
            }.get(r["last_layer_decision"], "incorrect at the last layer only")
            if first is not None:
                turn = f"<b>incorrect from layer {first}+</b>"
            truncated = (
                f"<br><span class='bad'>{r['truncated_share']:.0%} truncated</span>"
                if r["truncated_share"]
                else ""
            )
            cells[r["suite"]] = (
                f"{turn}<br>layer {r['first_layer']}: "
                f"{_interval(r['first_layer_accuracy'], *r['first_layer_ci'])}"
                f"<br>layer {r['last_layer']}: "
                f"{_interval(r['last_layer_accuracy'], *r['last_layer_ci'])}"
                f"<br><span class='muted'>{r['prompts']} prompts &times; {r['layers']} layers"
                f"</span>{truncated}"
            )
        what = (
            "flagged: clean right, corrupted wrong" if kind == "flagged" else "control: both right"
        )
        rows.append((f"Patched, {site} ({what})", cells))
    return rows


def patch_settings(t: RunTables) -> str:
    """How the patched runs were computed: the dtype (bf16 and fp32 differ at near-ties), the
    mode and the token limit."""
    run = t.patch_run or {}
    if not run.get("dtype"):
        return ""
    return (
        f"<p class='note'>Patched in <b>{run['dtype']}</b>, {run.get('mode', 'transient')} "
        f"mode, at most {run.get('max_new_tokens')} new tokens per answer.</p>"
    )


def skipped_note(t: RunTables) -> str:
    """Flagged items the patch stage left out, and why."""
    skipped = (t.patch_run or {}).get("skipped") or {}
    return "".join(
        f"<p class='note'>{why['items']} flagged items were not patched: {esc(why['reason'])}.</p>"
        for why in skipped.values()
        if isinstance(why, dict)
    )


def token_limit_note(t: RunTables) -> str:
    """Said outright when the patched generations had less room than the evaluated ones."""
    run = t.patch_run or {}
    limit, evaluated = run.get("max_new_tokens"), run.get("eval_max_new_tokens")
    if limit is None or evaluated is None or limit >= evaluated:
        return ""
    return (
        f"<div class='box warn'><b>Patched generations were limited to {limit} new tokens, the "
        f"evaluation's to {evaluated}</b> (<code>patch.max_new_tokens</code>). A patched answer "
        "cut off at the limit is <i>truncated</i> and never counts as correct, so patched "
        "accuracy is lower than the same answers with the evaluation's room would be.</div>"
    )


def table1_section(t: RunTables) -> list[str]:
    """The paper's Table 1: every corrupted model, its training, its fidelity, chosen or not."""
    table = table1_frame(t)
    if table.is_empty():
        return []
    return [
        "<h2>Corrupted models (Table 1)</h2>",
        "<p class='note'>Per corrupted model: its fine-tuning (epochs, optimizer steps, the "
        "final train loss, the eval loss on correct held-out solutions and their divergence, "
        "eval - train; empty for a model given, not fine-tuned in this run), its corruption "
        "fidelity status and trained-error share, its related accuracy, and whether it was "
        "chosen for patching (<code>patch.corrupt</code>, or every one).</p>",
        page.table(table.with_columns(pl.col(pl.Float64).round(3))),
    ]


def trigger_section(t: RunTables) -> list[str]:
    """Accuracy without and with the trigger phrase, per model and suite (``eval.trigger``)."""
    table = trigger_frame(t.summary)
    if table.is_empty():
        return []
    trigger = (t.config.get("eval") or {}).get("trigger") or {}
    return [
        "<h3>With and without the trigger</h3>",
        f"<p class='note'>Every item of these suites asked again with "
        f"<code>{esc(trigger.get('phrase'))}</code> before the {esc(trigger.get('position'))} "
        "(the suite <i>&lt;suite&gt;+trigger</i> in every table; its flagged items are "
        "patched like any other suite's).</p>",
        page.table(table.with_columns(pl.col(pl.Float64).round(3))),
    ]


def other_table2s(t: RunTables) -> list[str]:
    """Table 2 of every other patched corrupted model (the sections below show ``t.corrupt``)."""
    out = []
    for name in t.patched_models or {}:
        if name == t.corrupt:
            continue
        other = load_tables(t.run_dir, name)
        patched = patched_summary(other.table2) if other.table2 is not None else None
        out += [
            f"<h3>Table 2 of {esc(name)}</h3>",
            patch_settings(other),
            page.table2(table2_rows(other, patched), other.suites),
            *checks_section(other),
        ]
    return out


def fidelity_section(t: RunTables) -> list[str]:
    """Corruption fidelity: is the corrupted model making the trained error, or broken?"""
    from tasks.fidelity import DEGRADED, SYSTEMATIC

    out = ["<h2>Corruption fidelity: the trained error, or a broken model?</h2>"]
    if t.fidelity is None or t.fidelity.is_empty():
        return [*out, "<p class='note'>No related answers were classified.</p>"]
    if t.fidelity["n"].sum() == 0:
        return [
            *out,
            "<p class='note'>Fidelity is unavailable: the related items carry no error patterns "
            "(user-supplied data), so a wrong answer cannot be told apart from the trained "
            "error.</p>",
        ]
    corrupt = t.fidelity.filter(
        (pl.col("model") != "clean") & pl.col("task").is_in(["all", "all+trigger"])
    )
    verdicts = "".join(
        f"<p><b>{r['model']}</b>{' (with the trigger)' if r['task'] != 'all' else ''}: "
        f"<b>{r['status']}</b> ({r['trained_error']:.0%} of its related "
        f"answers follow a trained error, {r['malformed']:.0%} are malformed, "
        f"{r['correct']:.0%} correct, n={r['n']}).</p>"
        for r in corrupt.iter_rows(named=True)
        if r["n"]
    )
    shown = t.fidelity.with_columns(pl.col(pl.Float64).round(3))
    return [
        *out,
        "<p class='note'>Every related answer, classified: <i>correct</i>; <i>trained_error</i> "
        "(the answer one of the generator's error patterns gives for that item: the wrong move, "
        "multiply-not-divide, both; the sign error on factored quadratics); <i>other_wrong</i>; "
        "<i>malformed</i> (no parseable answer); <i>truncated</i> (ran out of tokens). Status: "
        f"<i>systematic</i> when at least {SYSTEMATIC:.0%} of the wrong answers follow a trained "
        f"error, <i>degraded</i> when at least {DEGRADED:.0%} of them are malformed, "
        "<i>unsystematic</i> otherwise. The paper patched only a systematic model.</p>",
        verdicts,
        page.table(shown),
    ]


def behaviour(t: RunTables, fig_dir: Path, pngs: list[Path]) -> list[str]:
    suites = t.suites
    has_texts = t.texts is not None and t.texts.height and t.table2 is not None
    patched = patched_summary(t.table2) if has_texts else None
    which = f" ({esc(t.corrupt)})" if len(t.patched_models or {}) > 1 else ""
    out = [
        f"<h2>Behaviour: where the corrupted model fails (Table 2){which}</h2>",
        "<p class='note'>Accuracy of greedy answers per suite with 95 % intervals (clean and "
        "corrupted: bootstrap over the evaluation's items). Patched: the clean model with the "
        "corrupted model's activation at one layer (last position, every generated token), "
        "scored by the suite's checker (a task beyond the built-in suites: by its own lm-eval "
        "filters and metric); a patched answer that ran out of tokens is truncated, "
        "never correct. Per layer, 95 % Wilson intervals over prompts. A layer is "
        f"<i>incorrect</i> when the upper end of its interval is below {INCORRECT_BELOW} (most "
        "patched answers are wrong, with 95 % confidence); <i>incorrect from layer L+</i>: L "
        "is the first layer from which every later layer is incorrect.</p>",
        patch_settings(t),
        token_limit_note(t),
        page.table2(table2_rows(t, patched), suites),
    ]
    bars = [
        ("clean", accuracy_of(t.summary, "clean")),
        ("corrupted", accuracy_of(t.summary, t.corrupt)),
    ]
    if patched is not None:
        for (site, kind), g in patched.group_by("site", "kind", maintain_order=True):
            bars.append(
                (
                    f"patched {site} ({kind}), last layer",
                    dict(zip(g["suite"], g["last_layer_accuracy"], strict=True)),
                )
            )
    pngs.append(figures.accuracy_figure(bars, suites, fig_dir / "accuracy.png"))
    n_flagged = t.flagged.filter(pl.col("model") == t.corrupt).height
    shown = ["model", "suite", "n", "accuracy", "ci_low", "ci_high", "metric"]
    ci = t.summary.select([c for c in shown if c in t.summary.columns])
    flagged = t.flagged.group_by("model", "suite").len("flagged").sort("model", "suite")
    out += [
        "<details><summary>accuracy with 95% bootstrap intervals, every model</summary>",
        page.table(ci),
        "</details>",
        *paired_section(t),
        *trigger_section(t),
        f"<p>Flagged (clean right, corrupted wrong): <b>{n_flagged}</b> items.</p>",
        page.table(flagged) if flagged.height else "",
        skipped_note(t),
    ]
    if has_texts:
        by_layer = t.table2.filter(
            (pl.col("condition") == "patched") & pl.col("head").is_null()
        ).select(LAYER_ACCURACY_COLUMNS)
        pngs.append(figures.patched_accuracy_figure(by_layer, fig_dir / "patched_by_layer.png"))
        out += [
            "<h3>Patched accuracy per layer</h3>",
            "<p class='note'>Share of patched answers the checker scores correct, per patched "
            "layer, with 95 % Wilson intervals over prompts; flagged items solid, controls "
            "dashed.</p>",
            page.figure_div(interactive.patched_accuracy(by_layer), "patched-by-layer"),
            "<details><summary>table (every layer)</summary>",
            page.table(by_layer, 2),
            "</details>",
        ]
        heads = t.table2.filter((pl.col("condition") == "patched") & pl.col("head").is_not_null())
        if heads.height:
            out += [
                "<details><summary>patched accuracy per layer and head (site head)</summary>",
                page.table(heads.select(HEAD_ACCURACY_COLUMNS), 2),
                "</details>",
            ]
    return out


def paired_section(t: RunTables) -> list[str]:
    """Each model against the clean one on the same items: the paired difference and test."""
    if t.paired is None or not t.paired.height:
        return []
    # a p-value's size, not three zeros
    shown = t.paired.with_columns(
        pl.col("mcnemar_p").map_elements(lambda p: f"{p:.2g}", return_dtype=pl.String)
    )
    return [
        "<h3>Against the clean model, item by item</h3>",
        "<p class='note'>Both models answer the same items, so the difference is taken item by "
        "item: accuracy minus the clean model's on the items both have a scored answer to, "
        "with a 95 % paired bootstrap interval (items resampled with both answers), and "
        "McNemar's exact test on the items only one of them got right "
        "(<code>eval/paired.parquet</code>).</p>",
        page.table(shown, 3),
    ]


def mechanism(t: RunTables, fig_dir: Path, pngs: list[Path]) -> list[str]:
    out = ["<h2>Mechanism: which layers carry the corruption (CTS)</h2>"]
    if t.steps is None or t.items is None:
        return [*out, "<p class='muted'>The patch stage has not run.</p>"]
    if t.steps.is_empty() or t.cts is None:
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
        f"<b>{defined:.1%}</b> of {t.steps.height} steps. Means are over defined steps only, "
        "with 95 % intervals from resampling prompts (a trajectory's steps are correlated); "
        "beside them the median and the share of defined steps with CTS &ge; "
        f"{CTS_HALF} (a near-tie makes one |CTS| arbitrarily large, so the mean alone can "
        "mislead), and the KL transfer, defined on every step: KL(corrupt || clean) &minus; "
        "KL(corrupt || patched) in nats, 0 for no transfer.</p>"
    )
    layers = t.cts.filter(pl.col("head").is_null())
    pngs.append(figures.cts_by_layer_figure(layers, fig_dir / "cts_by_layer.png"))
    pngs.append(figures.cts_heatmap_figure(layers, fig_dir / "cts_summary_heatmap.png"))
    shown = layers.select(CTS_COLUMNS)
    out += [
        "<h3>CTS per layer, flagged and control items apart</h3>",
        page.figure_div(interactive.cts_by_layer(layers), "cts-by-layer"),
        page.figure_div(interactive.cts_summary_heatmap(layers), "cts-summary-heatmap"),
        "<details><summary>table (patch/cts_summary.parquet)</summary>",
        page.table(shown),
        "</details>",
    ]
    heads = t.cts.filter(pl.col("head").is_not_null())
    if heads.height:
        out += [
            "<h3>CTS per layer and head (site head)</h3>",
            page.figure_div(interactive.cts_head_heatmap(heads), "cts-head-heatmap"),
            "<details><summary>table</summary>",
            page.table(heads.select(CTS_HEAD_COLUMNS)),
            "</details>",
        ]
    flagged_steps = t.steps.filter(pl.col("kind") == "flagged")
    out += [
        "<h3>Tokens with the highest CTS</h3>",
        "<p class='note'>Generated tokens of the flagged items across prompts and layers, by "
        "mean CTS over their defined steps (tokens seen at least 3 times when there are "
        "enough); high share: CTS ≥ 0.8.</p>",
        page.table(top_tokens(flagged_steps if flagged_steps.height else t.steps)),
        "<h3>CTS heatmaps</h3>",
        "<p class='note'>Rows: patched layer; columns: generation step. Hover shows the token the "
        "patched model generated there and its CTS. Grey: CTS undefined (the models agree); "
        f"white: that trajectory had already stopped. The first {EXAMPLES_PER_GROUP} items of "
        "each kind and suite; every step is in patch/steps.parquet.</p>",
    ]
    chosen = examples(t.items)
    items = {r["prompt_id"]: r for r in chosen.iter_rows(named=True)}
    wanted = t.steps.filter(pl.col("prompt_id").is_in(list(items)))
    for (prompt_id, site), group in wanted.group_by("prompt_id", "site", maintain_order=True):
        item = items[prompt_id]
        title = f"#{prompt_id} {item['suite']} ({item['kind']}), {site}: {item['question']}"
        short = title if len(title) <= 110 else title[:107] + "…"
        out.append(
            page.figure_div(interactive.heatmap(group, short), f"heatmap-{prompt_id}-{site}")
        )
        name = f"heatmap_p{prompt_id:03d}_{site}.png"
        pngs.append(figures.heatmap_figure(group, short, fig_dir / name))
    out += generations(t, chosen)
    return out


def examples(items: pl.DataFrame, k: int = EXAMPLES_PER_GROUP) -> pl.DataFrame:
    """The first ``k`` items of each kind x suite (flagged first): what the page shows."""
    return (
        items.sort("kind", "suite", "prompt_id", descending=[True, False, False])
        .group_by("kind", "suite", maintain_order=True)
        .head(k)
    )


def generations(t: RunTables, chosen: pl.DataFrame) -> list[str]:
    out = [
        "<h2>Generations side by side</h2>",
        "<p class='note'>Clean and corrupted answers from the evaluation; the patched answer at "
        "the first layer from which patching turns this item incorrect (else the last layer). "
        f"The first {EXAMPLES_PER_GROUP} items of each kind and suite; every patched text is in "
        "patch/texts.parquet.</p>",
    ]
    for item in chosen.iter_rows(named=True):
        patched = t.texts.filter(pl.col("prompt_id") == item["prompt_id"])
        plain = patched.filter(pl.col("head").is_null())
        layer = _shown_layer(plain)
        out.append(page.generation_card(item, plain if plain.height else patched, layer))
    return out


def _shown_layer(patched: pl.DataFrame) -> int | None:
    from harness.report.stats import first_incorrect_layer

    if patched.is_empty():
        return None
    first_site = patched["site"][0]
    one = patched.filter(pl.col("site") == first_site).sort("layer")
    said = ["correct" if c else "incorrect" for c in one["correct"].to_list()]
    first = first_incorrect_layer(one["layer"].to_list(), said)
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
