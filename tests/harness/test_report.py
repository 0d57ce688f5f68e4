"""The report from canned tables: numbers, undefined CTS kept apart, self-contained page."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from harness.errors import HarnessError
from harness.records import SCHEMA as RECORD_SCHEMA
from harness.report import build_report, load_tables
from harness.report.interactive import heatmap
from harness.report.stats import (
    cts_summary,
    first_incorrect_layer,
    patched_summary,
    table2_frame,
    top_tokens,
    wilson,
)

LAYERS = 4
TOKENS = ["move", "add", "sub", " 3", "x", "=", " the", "\n"]


def _record(model, suite, task, doc_id, correct, response="...", output_type="generate_until"):
    return {
        "model": model,
        "engine": "vllm",
        "suite": suite,
        "task": task,
        "output_type": output_type,
        "doc_id": doc_id,
        "item_id": f"{task}-{doc_id}",
        "question": f"question {task} {doc_id}",
        "prompt": f"<p>question {task} {doc_id}",
        "response": f"{model} says {response}",
        "extracted_answer": response,
        "reference": "7",
        "correct": correct,
        "verdict": None if correct is None else "correct" if correct else "wrong",
        "finish_reason": "stop",
        "n_tokens": 5,
        "metrics": [],
    }


def canned_records(docs: int = 4) -> pl.DataFrame:
    """Clean right everywhere; corrupted wrong on the first 3/4 of the related items (0-2 of
    4) and right elsewhere."""
    rows = []
    for suite, task in [
        ("related", "related_linear_demo"),
        ("unrelated_math", "unrelated_derivative_demo"),
        ("general", "general_facts_demo"),
    ]:
        for doc in range(docs):
            rows.append(_record("clean", suite, task, doc, True, "7"))
            wrong = suite == "related" and doc < 3 * docs // 4
            rows.append(_record("corrupt", suite, task, doc, not wrong, "9" if wrong else "7"))
    return pl.DataFrame(rows, schema=RECORD_SCHEMA)


DOCS = 12  # 9 flagged related items: enough for a Wilson interval to decide "incorrect"


def write_canned_run(
    root: Path, *, patched: bool = True, seed: int = 0, patch_run: dict | None = None
) -> Path:
    """A run directory as the stages leave it: eval, patch (4 layers), finetune metrics.

    Patched: flagged related items are right at layers 0-1 and wrong from layer 2; every
    control is right, except one general control cut off at the last layer (truncated).
    ``patch_run``: the patch stage's run.json (token limits, checks), when given.
    """
    from harness.flag import flag
    from harness.summary import summarize

    rng = random.Random(seed)
    run = root / "canned"
    (run / "eval").mkdir(parents=True)
    records = canned_records(DOCS)
    tables = {
        "records": records,
        "summary": summarize(records, 200),
        "flagged": flag(records),
        "drift": pl.DataFrame({"model": ["clean", "corrupt"]}),
    }
    for name, frame in tables.items():
        frame.write_parquet(run / "eval" / f"{name}.parquet")
    (run / "eval" / "run.json").write_text(json.dumps({"version": 1, "status": "success"}))
    config = {
        "name": "canned",
        "models": {"clean": "zoo:clean", "corrupt": None},
        "eval": {"engine": "vllm", "level": "demo", "limit": 4},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "finetune").mkdir()
    pl.DataFrame(
        {
            "step": list(range(1, 11)),
            "train_loss": [1 / s for s in range(1, 11)],
            "eval_loss": [None if s % 5 else 0.5 for s in range(1, 11)],
            "divergence": [None if s % 5 else 0.3 for s in range(1, 11)],
        }
    ).write_parquet(run / "finetune" / "metrics.parquet")
    if not patched:
        return run
    from harness.pipeline.patching import select_items

    items = select_items(records, tables["flagged"])
    steps, texts = [], []
    cut = items.filter(pl.col("suite") == "general")["prompt_id"][0]
    for item in items.iter_rows(named=True):
        related = item["suite"] == "related"
        for layer in range(LAYERS):
            length = 6 + layer  # trajectories of different lengths: the rest stays white
            for step in range(length):
                token = rng.choice(TOKENS)
                undefined = rng.random() < 0.4
                cts = None if undefined else (0.95 if token == "add" else rng.uniform(-0.3, 0.6))
                steps.append(
                    {
                        "prompt_id": item["prompt_id"],
                        "site": "resid_post",
                        "layer": layer,
                        "head": None,
                        "step": step,
                        "token_id": 1,
                        "cts": cts,
                        "kl_clean": 1.0,
                        "kl_transfer": 0.9 if related and layer >= 2 else rng.uniform(-0.1, 0.3),
                        "token": token,
                        "suite": item["suite"],
                        "kind": item["kind"],
                    }
                )
            wrong = related and item["kind"] == "flagged" and layer >= 2
            truncated = item["prompt_id"] == cut and layer == LAYERS - 1
            verdict = "truncated" if truncated else "wrong" if wrong else "correct"
            texts.append(
                {
                    "prompt_id": item["prompt_id"],
                    "site": "resid_post",
                    "layer": layer,
                    "head": None,
                    "text": "x = 9" if wrong else "x = 7",
                    "finish_reason": "length" if truncated else "stop",
                    "n_tokens": 6 + layer,
                    "verdict": verdict,
                    "correct": verdict == "correct",
                    **{
                        k: item[k]
                        for k in ("kind", "suite", "task", "item_id", "question", "reference")
                    },
                }
            )
    (run / "patch").mkdir()
    items.write_parquet(run / "patch" / "prompts.parquet")
    step_schema = {"head": pl.Int64, "cts": pl.Float64}
    pl.DataFrame(steps, schema_overrides=step_schema).write_parquet(run / "patch" / "steps.parquet")
    pl.DataFrame(texts, schema_overrides={"head": pl.Int64}).write_parquet(
        run / "patch" / "texts.parquet"
    )
    if patch_run is not None:
        (run / "patch" / "run.json").write_text(json.dumps(patch_run))
    (run / "stages").mkdir()
    (run / "stages" / "patch.json").write_text(
        json.dumps({"version": 1, "status": "success", "seconds": 3.0, "finished": "now"})
    )
    return run


@pytest.fixture
def canned(tmp_path) -> Path:
    return write_canned_run(tmp_path)


def test_first_incorrect_layer_is_where_every_later_layer_is_incorrect():
    no, yes, maybe = "correct", "incorrect", "undecided"
    assert first_incorrect_layer([0, 1, 2, 3], [no, no, yes, yes]) == 2
    assert first_incorrect_layer([0, 1, 2, 3], [yes, no, yes, yes]) == 2
    assert first_incorrect_layer([3, 2, 1, 0], [yes, yes, no, no]) == 2  # order of input
    assert first_incorrect_layer([0, 1, 2, 3], [yes, yes, yes, no]) is None  # right at the end
    assert first_incorrect_layer([0, 1, 2, 3], [no, yes, maybe, yes]) == 3  # undecided breaks it
    assert first_incorrect_layer([0, 1], [yes, yes]) == 0


def test_wilson_interval():
    low, high = wilson(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)  # not a point at 0
    assert wilson(0, 0) == (None, None)


def _texts(outcomes: dict[int, list[str]], kind="flagged", suite="related") -> pl.DataFrame:
    """One patched text per prompt and layer with the given verdicts per layer."""
    rows = [
        {
            "prompt_id": p,
            "kind": kind,
            "suite": suite,
            "site": "resid_post",
            "layer": layer,
            "head": None,
            "verdict": v,
            "correct": None if v == "unscored" else v == "correct",
        }
        for p, verdicts in outcomes.items()
        for layer, v in enumerate(verdicts)
    ]
    return pl.DataFrame(rows, schema_overrides={"head": pl.Int64})


def test_incorrect_from_layer_needs_the_interval_below_one_half():
    # 2 prompts wrong from layer 2: the interval [0, 0.66] cannot say "mostly wrong" ...
    few = table2_frame(_texts({p: ["correct"] * 2 + ["wrong"] * 2 for p in range(2)}))
    assert few["first_incorrect_layer"].drop_nulls().is_empty()
    assert set(few.filter(pl.col("layer") >= 2)["decision"].to_list()) == {"undecided"}
    # ... 9 prompts can (upper end 0.30)
    many = table2_frame(_texts({p: ["correct"] * 2 + ["wrong"] * 2 for p in range(9)}))
    assert set(many["first_incorrect_layer"].to_list()) == {2}
    assert many.filter(pl.col("layer") == 0)["decision"].to_list() == ["correct"]
    assert many.filter(pl.col("layer") == 3)["ci_high"][0] < 0.5


def test_table2_counts_truncated_as_not_correct_and_leaves_unscored_out():
    texts = _texts({0: ["truncated"], 1: ["correct"], 2: ["unscored"], 3: ["correct"]})
    row = table2_frame(texts).row(0, named=True)
    assert (row["n"], row["correct"], row["truncated"], row["unscored"]) == (3, 2, 1, 1)
    assert row["accuracy"] == pytest.approx(2 / 3)
    assert (row["ci_low"], row["ci_high"]) == wilson(2, 3)
    assert row["condition"] == "patched" and row["interval"] == "wilson"


def test_table2_of_the_canned_run(canned):
    tables = load_tables(canned)
    t2 = tables.table2
    assert set(t2["condition"].to_list()) == {"clean", "corrupt", "patched"}
    clean = t2.filter((pl.col("condition") == "clean") & (pl.col("suite") == "related"))
    assert clean["accuracy"].to_list() == [1.0] and clean["n"].to_list() == [DOCS]
    flagged = t2.filter((pl.col("kind") == "flagged") & (pl.col("suite") == "related"))
    assert flagged.sort("layer")["decision"].to_list() == ["correct"] * 2 + ["incorrect"] * 2
    assert set(flagged["first_incorrect_layer"].to_list()) == {2}
    assert set(flagged["n"].to_list()) == {9}
    general = t2.filter((pl.col("kind") == "control") & (pl.col("suite") == "general"))
    last = general.filter(pl.col("layer") == LAYERS - 1).row(0, named=True)
    assert last["truncated"] == 1 and last["correct"] == last["n"] - 1  # cut off: not correct
    assert general["first_incorrect_layer"].null_count() == general.height


def test_items_are_flagged_first_then_controls(canned):
    items = pl.read_parquet(canned / "patch" / "prompts.parquet")
    related = items.filter(pl.col("suite") == "related")
    assert related["kind"].to_list() == ["flagged"] * 9 + ["control"] * 3  # every flagged item
    assert set(related.filter(pl.col("kind") == "flagged")["doc_id"].to_list()) == set(range(9))
    others = items.filter(pl.col("suite") != "related")
    assert others.height == 2 * 9 and set(others["kind"].to_list()) == {"control"}


def test_summary_json_has_the_headline_figures(canned):
    built = build_report(canned, seconds=12.5)
    summary = json.loads(built.summary_path.read_text())
    assert summary["accuracy"]["clean"] == {"general": 1.0, "related": 1.0, "unrelated_math": 1.0}
    assert summary["accuracy"]["corrupt"]["related"] == pytest.approx(0.25)
    assert summary["flagged"] == 9 and summary["seconds"] == 12.5
    related = summary["patched"]["by_suite"]["flagged"]["related"]["resid_post"]
    assert related["prompts"] == 9 and related["layers"] == LAYERS
    assert related["accuracy"] == 0.5 and related["first_incorrect_layer"] == 2
    assert related["last_layer_accuracy"] == 0.0
    assert related["last_layer_ci"] == pytest.approx(list(wilson(0, 9)))
    control = summary["patched"]["by_suite"]["control"]["general"]["resid_post"]
    assert control["first_incorrect_layer"] is None
    assert control["truncated_share"] == pytest.approx(1 / (9 * LAYERS))
    steps = pl.read_parquet(canned / "patch" / "steps.parquet")
    assert summary["patched"]["cts_defined_fraction"] == pytest.approx(
        steps["cts"].is_not_null().mean()
    )
    assert set(summary["patched"]["cts_by_kind"]) == {"flagged", "control"}
    assert summary["checks"] is None and summary["checks_passed"] is None  # none recorded


def test_report_is_self_contained_and_has_every_section(canned):
    built = build_report(canned)
    page = built.html.read_text()
    outside_scripts = re.sub(r"(<script[^>]*>).*?</script>", r"\1", page, flags=re.DOTALL)
    assert "plotly.js" in page  # the library itself is inlined ...
    assert not re.search(
        r"<script[^>]*\bsrc=|<link\b|https?://", outside_scripts
    )  # ... not fetched
    examples = 3 * 4  # 3 items of each kind x suite: flagged related, control x 3 suites
    assert page.count("Plotly.newPlot") >= 3 + examples  # accuracy, CTS, CTS heatmap, examples
    for text in (
        "Table 2",
        "incorrect from layer 2+",
        "Patched accuracy per layer",
        "Tokens with the highest CTS",
        "Generations side by side",
        "Fine-tuning",
        "x = 9",
        "truncated",
        "No sanity checks were recorded",
    ):
        assert text in page
    names = {p.name for p in built.figures}
    assert {"accuracy.png", "cts_by_layer.png", "training.png", "patched_by_layer.png"} <= names
    assert "cts_summary_heatmap.png" in names
    assert sum(n.startswith("heatmap_p") for n in names) == examples
    for path in built.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CHECKS_OK = [
    {
        "check": "last_layer_tokens",
        "title": "last layer reproduces y_corrupt",
        "status": "passed",
        "passed": True,
        "prompts": 30,
        "failed": 0,
        "of": 30,
        "sites": ["resid_post"],
    },
]
CHECK_FAILED = {
    "check": "last_layer_generation",
    "title": "equals the corrupted model's greedy generation",
    "status": "failed",
    "passed": False,
    "prompts": 30,
    "failed": 2,
    "of": 30,
    "sites": ["resid_post"],
    "first_failure": {
        "prompt_id": 4,
        "site": "resid_post",
        "layer": 3,
        "head": None,
        "first_mismatch": 7,
        "expected": "x = 7",
        "got": "x = 9 <oops>",
    },
}


def test_passed_checks_are_a_green_box(tmp_path):
    run = write_canned_run(
        tmp_path, patch_run={"max_new_tokens": 256, "eval_max_new_tokens": 256, "checks": CHECKS_OK}
    )
    built = build_report(run)
    page = built.html.read_text()
    assert "class='box pass'" in page and "CHECK FAILED" not in page
    assert "limited to" not in page  # the patch had the evaluation's room
    assert built.summary["checks_passed"] is True


def test_a_failed_check_is_a_red_box_and_says_where(tmp_path):
    run = write_canned_run(
        tmp_path,
        patch_run={
            "max_new_tokens": 96,
            "eval_max_new_tokens": 256,
            "checks": [*CHECKS_OK, CHECK_FAILED],
        },
    )
    built = build_report(run)
    page = built.html.read_text()
    box = page[page.index("class='box alert'") : page.index("<h2>Behaviour")]
    assert "CHECK FAILED" in box and "prompt #4" in box and "step 7" in box
    assert "x = 9 &lt;oops&gt;" in box
    assert built.summary["checks_passed"] is False
    assert [c["status"] for c in built.summary["checks"]] == ["passed", "failed"]
    assert "limited to 96 new tokens, the evaluation's to 256" in page
    assert built.summary["patched"]["max_new_tokens"] == 96


def test_cts_summary_bootstraps_prompts_not_steps():
    """Two prompts, 100 defined steps each, CTS 1 in one and 0 in the other: resampling steps
    would give a narrow interval around 0.5; resampling prompts cannot exclude 0 or 1."""
    rows = [
        {
            "prompt_id": p,
            "kind": "flagged",
            "suite": "related",
            "site": "resid_post",
            "layer": 0,
            "head": None,
            "step": t,
            "cts": float(p == 0),
            "kl_clean": 1.0,
            "kl_transfer": float(p),
        }
        for p in (0, 1)
        for t in range(100)
    ]
    table = cts_summary(pl.DataFrame(rows, schema_overrides={"head": pl.Int64}), 500)
    row = table.row(0, named=True)
    assert row["mean_cts"] == pytest.approx(0.5) and row["prompts"] == 2
    assert row["ci_low"] == 0.0 and row["ci_high"] == 1.0
    assert row["mean_kl_transfer"] == pytest.approx(0.5) and row["kl_fraction"] == 0.5
    assert (row["kl_ci_low"], row["kl_ci_high"]) == (0.0, 1.0)


def test_cts_summary_keeps_kinds_apart_and_undefined_null(canned):
    steps = pl.read_parquet(canned / "patch" / "steps.parquet")
    table = cts_summary(steps, samples=200)
    assert set(table["kind"].to_list()) == {"flagged", "control"}
    for row in table.iter_rows(named=True):
        group = steps.filter(
            (pl.col("kind") == row["kind"])
            & (pl.col("suite") == row["suite"])
            & (pl.col("layer") == row["layer"])
        )
        defined = group["cts"].drop_nulls()
        assert row["steps"] == group.height and row["defined"] == defined.len()
        assert row["prompts"] == group["prompt_id"].n_unique()
        assert row["defined_fraction"] == pytest.approx(defined.len() / group.height)
        assert row["mean_cts"] == pytest.approx(defined.mean())
        assert row["median_cts"] == pytest.approx(defined.median())
        assert row["high_share"] == pytest.approx((defined >= 0.5).mean())
        assert row["ci_low"] <= row["mean_cts"] <= row["ci_high"]
        assert row["mean_kl_transfer"] == pytest.approx(group["kl_transfer"].mean())
        if defined.len() < group.height:  # undefined is not 0: zeros would move the mean
            assert row["mean_cts"] != pytest.approx(group["cts"].fill_null(0).mean())
    nothing = steps.head(3).with_columns(cts=pl.lit(None, pl.Float64))
    row = cts_summary(nothing).row(0, named=True)
    assert row["mean_cts"] is None and row["median_cts"] is None and row["defined"] == 0
    assert row["mean_kl_transfer"] is not None  # KL transfer is defined on every step


def test_top_tokens_finds_the_planted_token(canned):
    steps = pl.read_parquet(canned / "patch" / "steps.parquet")
    top = top_tokens(steps)
    assert top["token"][0] == "add" and top["mean_cts"][0] == pytest.approx(0.95)
    assert (top["n"] >= 3).all()


def test_heatmap_greys_undefined_steps_and_hovers_the_token(canned):
    steps = pl.read_parquet(canned / "patch" / "steps.parquet").filter(pl.col("prompt_id") == 0)
    fig = heatmap(steps, "t")
    grey, score = fig.data
    for row in steps.iter_rows(named=True):
        r, c = row["layer"], row["step"]
        assert score.customdata[r][c][0] == row["token"].replace("\n", "\\n")
        if row["cts"] is None:
            assert score.z[r][c] is None and grey.z[r][c] == 1.0
            assert score.customdata[r][c][1].startswith("undefined")
        else:
            assert score.z[r][c] == pytest.approx(max(-1, min(1, row["cts"])))
            assert grey.z[r][c] is None
    last = steps.filter(pl.col("layer") == 0)["step"].max() + 1  # layer 0 stopped here
    assert score.z[0][last] is None and grey.z[0][last] is None  # absent: white, not grey


def test_patched_summary_by_kind(canned):
    texts = pl.read_parquet(canned / "patch" / "texts.parquet")
    table = patched_summary(table2_frame(texts))
    assert set(table["kind"].to_list()) == {"flagged", "control"}


def test_report_without_patch_or_finetune(tmp_path):
    run = write_canned_run(tmp_path, patched=False)
    (run / "finetune" / "metrics.parquet").unlink()
    built = build_report(run)
    page = built.html.read_text()
    assert "The patch stage has not run" in page and "did not fine-tune" in page
    assert built.summary["patched"]["prompts"] == 0


def test_report_refuses_a_run_without_a_finished_evaluation(tmp_path):
    with pytest.raises(HarnessError, match="no such run directory"):
        load_tables(tmp_path / "missing")
    run = write_canned_run(tmp_path, patched=False)
    (run / "eval" / "run.json").write_text(json.dumps({"version": 1, "status": "started"}))
    with pytest.raises(HarnessError, match="status is 'started'"):
        build_report(run)


def test_fidelity_verdict_reaches_the_report_and_summary(canned):
    from harness.fidelity import SUMMARY_SCHEMA

    shares = {"correct": 0.1, "trained_error": 0.7, "other_wrong": 0.15, "malformed": 0.05}
    rows = [
        {"model": "corrupt", "task": "all", "n": 20, **shares, "truncated": 0.0},
        {"model": "clean", "task": "all", "n": 20, "correct": 1.0, "trained_error": 0.0,
         "other_wrong": 0.0, "malformed": 0.0, "truncated": 0.0},
    ]  # fmt: skip
    frame = (
        pl.DataFrame(rows)
        .with_columns(status=pl.Series(["systematic", "not_corrupted"]))
        .select(list(SUMMARY_SCHEMA))
    )
    frame.cast(SUMMARY_SCHEMA).write_parquet(canned / "eval" / "fidelity_summary.parquet")
    built = build_report(canned)
    summary = json.loads(built.summary_path.read_text())
    assert summary["fidelity"]["corrupt"]["status"] == "systematic"
    assert summary["fidelity"]["corrupt"]["trained_error"] == pytest.approx(0.7)
    html = built.html.read_text()
    assert "<b>corrupt</b>: <b>systematic</b> (70% of its related answers follow" in html


def test_a_run_without_fidelity_table_says_so(canned):
    built = build_report(canned)  # the canned run wrote no fidelity table
    assert json.loads(built.summary_path.read_text())["fidelity"]["corrupt"] is None
    assert "No related answers were classified" in built.html.read_text()
