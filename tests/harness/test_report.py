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
from harness.report.tables import first_incorrect_layer, layer_cts, patched_summary, top_tokens

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
        "metrics": [],
    }


def canned_records() -> pl.DataFrame:
    """Clean right everywhere; corrupted wrong on related items 0-2 and right elsewhere."""
    rows = []
    for suite, task in [
        ("related", "related_linear_demo"),
        ("unrelated_math", "unrelated_derivative_demo"),
        ("general", "general_facts_demo"),
    ]:
        for doc in range(4):
            rows.append(_record("clean", suite, task, doc, True, "7"))
            wrong = suite == "related" and doc < 3
            rows.append(_record("corrupt", suite, task, doc, not wrong, "9" if wrong else "7"))
    return pl.DataFrame(rows, schema=RECORD_SCHEMA)


def write_canned_run(root: Path, *, patched: bool = True, seed: int = 0) -> Path:
    """A run directory as the stages leave it: eval, patch (4 layers), finetune metrics."""
    from harness.flag import flag
    from harness.summary import summarize

    rng = random.Random(seed)
    run = root / "canned"
    (run / "eval").mkdir(parents=True)
    records = canned_records()
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

    items = select_items(records, tables["flagged"], 2)
    steps, texts = [], []
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
                        "token": token,
                        "suite": item["suite"],
                        "kind": item["kind"],
                    }
                )
            wrong = related and layer >= 2
            texts.append(
                {
                    "prompt_id": item["prompt_id"],
                    "site": "resid_post",
                    "layer": layer,
                    "head": None,
                    "text": "x = 9" if wrong else "x = 7",
                    "correct": not wrong,
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
    (run / "stages").mkdir()
    (run / "stages" / "patch.json").write_text(
        json.dumps({"version": 1, "status": "success", "seconds": 3.0, "finished": "now"})
    )
    return run


@pytest.fixture
def canned(tmp_path) -> Path:
    return write_canned_run(tmp_path)


def test_first_incorrect_layer_is_where_patched_answers_stay_wrong():
    assert first_incorrect_layer([0, 1, 2, 3], [1.0, 1.0, 0.0, 0.0]) == 2
    assert first_incorrect_layer([0, 1, 2, 3], [0.0, 1.0, 0.0, 0.0]) == 2
    assert first_incorrect_layer([3, 2, 1, 0], [0.0, 0.0, 1.0, 1.0]) == 2  # order of input
    assert first_incorrect_layer([0, 1, 2, 3], [0.0, 0.0, 0.0, 1.0]) is None  # right at the end
    assert first_incorrect_layer([0, 1], [0.0, 0.0]) == 0


def test_items_are_flagged_first_then_controls(canned):
    items = pl.read_parquet(canned / "patch" / "prompts.parquet")
    related = items.filter(pl.col("suite") == "related")
    assert related["kind"].to_list() == ["flagged", "flagged"]
    assert set(related["doc_id"].to_list()) <= {0, 1, 2}
    others = items.filter(pl.col("suite") != "related")
    assert others.height == 4 and set(others["kind"].to_list()) == {"control"}


def test_summary_json_has_the_headline_figures(canned):
    built = build_report(canned, seconds=12.5)
    summary = json.loads(built.summary_path.read_text())
    assert summary["accuracy"]["clean"] == {"general": 1.0, "related": 1.0, "unrelated_math": 1.0}
    assert summary["accuracy"]["corrupt"]["related"] == pytest.approx(0.25)
    assert summary["flagged"] == 3 and summary["seconds"] == 12.5
    related = summary["patched"]["by_suite"]["flagged"]["related"]["resid_post"]
    assert related == {"prompts": 2, "layers": LAYERS, "accuracy": 0.5, "first_incorrect_layer": 2}
    control = summary["patched"]["by_suite"]["control"]["general"]["resid_post"]
    assert control["accuracy"] == 1.0 and control["first_incorrect_layer"] is None
    steps = pl.read_parquet(canned / "patch" / "steps.parquet")
    assert summary["patched"]["cts_defined_fraction"] == pytest.approx(
        steps["cts"].is_not_null().mean()
    )


def test_report_is_self_contained_and_has_every_section(canned):
    built = build_report(canned)
    page = built.html.read_text()
    outside_scripts = re.sub(r"(<script[^>]*>).*?</script>", r"\1", page, flags=re.DOTALL)
    assert "plotly.js" in page  # the library itself is inlined ...
    assert not re.search(
        r"<script[^>]*\bsrc=|<link\b|https?://", outside_scripts
    )  # ... not fetched
    assert page.count("Plotly.newPlot") >= 1 + 6  # CTS by layer + one heatmap per prompt
    for text in (
        "Table 2",
        "incorrect from layer 2+",
        "Tokens with the highest CTS",
        "Generations side by side",
        "Fine-tuning",
        "x = 9",
    ):
        assert text in page
    names = {p.name for p in built.figures}
    assert {"accuracy.png", "cts_by_layer.png", "training.png"} <= names
    assert sum(n.startswith("heatmap_p") for n in names) == 6
    for path in built.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cts_means_use_defined_steps_only(canned):
    steps = pl.read_parquet(canned / "patch" / "steps.parquet")
    table = layer_cts(steps, samples=200)
    for row in table.iter_rows(named=True):
        group = steps.filter((pl.col("suite") == row["suite"]) & (pl.col("layer") == row["layer"]))
        defined = group["cts"].drop_nulls()
        assert row["steps"] == group.height and row["defined"] == defined.len()
        assert row["defined_fraction"] == pytest.approx(defined.len() / group.height)
        assert row["mean_cts"] == pytest.approx(defined.mean())
        assert row["ci_low"] <= row["mean_cts"] <= row["ci_high"]
        if defined.len() < group.height:  # undefined is not 0: zeros would move the mean
            assert row["mean_cts"] != pytest.approx(group["cts"].fill_null(0).mean())


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
    table = patched_summary(texts)
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
