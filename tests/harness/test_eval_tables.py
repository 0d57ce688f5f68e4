"""Evaluation tables on canned data: records, bootstrap intervals, flags, drift, comparison."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.compare import compare_runs, comparison_table
from harness.drift import LOGPROB_SCHEMA, drift_table
from harness.errors import HarnessError
from harness.evaluate import write_json, write_parquet
from harness.flag import flag
from harness.records import records_from_samples
from harness.summary import bootstrap_ci, paired_table, summarize


def gen_sample(doc_id: int, question: str, answer: str | None, response: str, acc: float | None):
    doc = {"id": f"x-{doc_id}", "question": question}
    if answer is not None:
        doc["answer"] = answer
    metrics = {"acc": acc} if acc is not None else {"length_chars": float(len(response))}
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": answer or "",
        "arguments": {"gen_args_0": {"arg_0": f"<prompt>{question}", "arg_1": {}}},
        "resps": [[response]],
        "filtered_resps": [response],
        "filter": "none",
        "metrics": list(metrics),
        **metrics,
    }


def mc_sample(doc_id: int, scores: list[float], label: int):
    doc = {
        "id": f"mc-{doc_id}",
        "question": "Capital of France?",
        "answer": "Paris",
        "choices": ["Rome", "Paris", "Oslo"],
        "label": label,
    }
    picked = int(np.argmax(scores))
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": label,
        "arguments": {
            f"gen_args_{i}": {"arg_0": "<p>", "arg_1": c} for i, c in enumerate(doc["choices"])
        },
        "resps": [[[s, False]] for s in scores],
        "filtered_resps": [[s, False] for s in scores],
        "filter": "none",
        "metrics": ["acc", "acc_norm"],
        "acc": float(picked == label),
        "acc_norm": float(picked == label),
    }


def canned_records(model: str, linear: list[tuple[str, bool]], open_responses: list[str]):
    samples = {
        "related_linear_demo": [
            gen_sample(i, f"q{i}", "8", resp, float(ok)) for i, (resp, ok) in enumerate(linear)
        ],
        "general_mc_demo": [mc_sample(0, [-3.0, -1.0, -2.0], 1)],
        "general_open_demo": [
            gen_sample(i, f"open{i}", None, r, None) for i, r in enumerate(open_responses)
        ],
        "not_our_task": [gen_sample(0, "ignored", "1", "1", 1.0)],
    }
    return records_from_samples(samples, model, "vllm")


def test_records_keep_prompt_response_answer_and_correctness():
    records = canned_records("clean", [("so **Answer:** 8", True), ("x = 3", False)], ["Hi."])
    assert set(records["task"]) == {"related_linear_demo", "general_mc_demo", "general_open_demo"}
    linear = records.filter(pl.col("task") == "related_linear_demo").sort("doc_id")
    assert linear["extracted_answer"].to_list() == ["8", "x = 3"]
    assert linear["correct"].to_list() == [True, False]
    assert linear["prompt"][0] == "<prompt>q0" and linear["suite"][0] == "related"
    mc = records.filter(pl.col("task") == "general_mc_demo").row(0, named=True)
    assert mc["response"] == "Paris" and mc["correct"] and mc["output_type"] == "multiple_choice"
    opened = records.filter(pl.col("task") == "general_open_demo").row(0, named=True)
    assert opened["correct"] is None and opened["suite"] == "general"
    assert {m["name"] for m in opened["metrics"]} == {"length_chars"}


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    outcomes = np.array([1.0] * 30 + [0.0] * 10)
    low, high = bootstrap_ci(outcomes, 2000, seed=0)
    assert low < 0.75 < high and low > 0.5 and high < 0.95
    assert bootstrap_ci(outcomes, 2000, seed=0) == (low, high)
    assert bootstrap_ci(np.ones(5), 100, 0) == (1.0, 1.0)
    assert bootstrap_ci(np.array([]), 100, 0) == (None, None)


def test_summary_counts_only_scored_rows_per_model_and_suite():
    records = canned_records("clean", [("8", True), ("8", True), ("1", False)], ["a", "b"])
    summary = summarize(records, samples=200)
    related = summary.filter(pl.col("suite") == "related").row(0, named=True)
    assert related["n"] == 3 and related["accuracy"] == pytest.approx(2 / 3)
    general = summary.filter(pl.col("suite") == "general").row(0, named=True)
    assert general["n"] == 1  # the MC item; open answers have no reference


def test_flags_are_clean_right_and_corrupt_wrong_per_model():
    clean = canned_records("clean", [("8", True), ("8", True), ("2", False)], ["a"])
    corrupt = canned_records("corrupt", [("666", False), ("8", True), ("666", False)], ["a"])
    other = canned_records("v12", [("5", False), ("5", False), ("5", False)], ["a"])
    flagged = flag(pl.concat([clean, corrupt, other]))
    pairs = set(zip(flagged["model"], flagged["doc_id"], strict=True))
    assert pairs == {("corrupt", 0), ("v12", 0), ("v12", 1)}
    row = flagged.filter(pl.col("model") == "corrupt").row(0, named=True)
    assert row["clean_answer"] == "8" and row["corrupt_answer"] == "666"
    assert row["prompt"] == "<prompt>q0" and row["suite"] == "related"


def test_paired_differences_are_item_by_item_with_mcnemars_test():
    from scipy.stats import binomtest

    right = [("8", True)] * 10
    clean = canned_records("clean", [*right, ("1", False), ("1", False)], ["a"])
    # 8 items only the clean model gets right, 1 only the corrupted one, 3 alike
    corrupt = canned_records(
        "corrupt", [("1", False)] * 8 + [("8", True)] * 2 + [("1", False), ("8", True)], ["a"]
    )
    same = canned_records("copy", [*right, ("1", False), ("1", False)], ["a"])
    paired = paired_table(pl.concat([clean, corrupt, same]), "clean", samples=2000, seed=0)
    assert set(paired["model"]) == {"corrupt", "copy"}  # the clean model is the baseline
    row = paired.filter((pl.col("model") == "corrupt") & (pl.col("suite") == "related"))
    row = row.row(0, named=True)
    assert (row["n"], row["clean_only"], row["model_only"]) == (12, 8, 1)
    assert row["clean_accuracy"] == pytest.approx(10 / 12)
    assert row["accuracy"] == pytest.approx(3 / 12)
    assert row["difference"] == pytest.approx(-7 / 12)
    assert row["ci_low"] < row["difference"] < row["ci_high"] < 0
    assert row["mcnemar_p"] == pytest.approx(binomtest(1, 9).pvalue) and row["mcnemar_p"] < 0.05
    # the multiple-choice item is scored too (general); the open ones are not (no reference)
    general = paired.filter((pl.col("model") == "corrupt") & (pl.col("suite") == "general"))
    assert general["n"].to_list() == [1]
    alike = paired.filter((pl.col("model") == "copy") & (pl.col("suite") == "related"))
    alike = alike.row(0, named=True)
    assert alike["difference"] == 0 and alike["mcnemar_p"] == 1.0
    assert (alike["ci_low"], alike["ci_high"]) == (0.0, 0.0)


def test_drift_reports_length_ratio_integer_share_and_likelihood_gap():
    clean = canned_records("clean", [], ["I would build schools.", "Peace for all."])
    corrupt = canned_records("corrupt", [], ["42", "Peace."])
    logprobs = pl.DataFrame(
        {
            "model": ["clean", "clean", "corrupt", "corrupt"],
            "doc_id": [0, 1, 0, 1],
            "item_id": ["x-0", "x-1", "x-0", "x-1"],
            "tokens": [5, 3, 5, 3],
            "logprob_per_token": [-1.0, -2.0, -3.0, -2.5],
        },
        schema=LOGPROB_SCHEMA,
    )
    row = drift_table(pl.concat([clean, corrupt]), logprobs).row(0, named=True)
    assert row["model"] == "corrupt" and row["n"] == 2
    assert row["length_ratio"] == pytest.approx((2 + 6) / (22 + 14))
    assert row["integer_only_share"] == 0.5 and row["clean_integer_only_share"] == 0.0
    assert row["likelihood_gap"] == pytest.approx(((-1 + 3) + (-2 + 2.5)) / 2)


def fake_eval_dir(path, accuracy: float):
    records = canned_records("clean", [("8", True)], ["a"])
    summary = summarize(records, samples=10).with_columns(pl.lit(accuracy).alias("accuracy"))
    write_parquet(summary, path / "summary.parquet")
    write_parquet(records, path / "records.parquet")
    write_parquet(flag(records), path / "flagged.parquet")
    write_parquet(drift_table(records, pl.DataFrame(schema=LOGPROB_SCHEMA)), path / "drift.parquet")
    write_json({"version": 1, "status": "success"}, path / "run.json")


def test_compare_lays_runs_side_by_side(tmp_path):
    for name, acc in (("v11", 0.25), ("v12", 0.75)):
        fake_eval_dir(tmp_path / name / "eval", acc)
    table = compare_runs([tmp_path / "v11", tmp_path / "v12" / "eval"])
    assert set(table["run"]) == {"v11", "v12"}
    related = table.filter(pl.col("suite") == "related").sort("run")
    assert related["accuracy"].to_list() == [0.25, 0.75]
    assert comparison_table(table).row_count == 2
    with pytest.raises(HarnessError, match="no evaluation found"):
        compare_runs([tmp_path / "missing"])


def test_compare_cli_writes_parquet_and_rejects_bad_runs(tmp_path):
    fake_eval_dir(tmp_path / "v11" / "eval", 0.5)
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(tmp_path / "v11"), "--out", str(tmp_path / "c.pq")])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "c.pq").height > 0
    (tmp_path / "broken" / "eval").mkdir(parents=True)
    write_json({"version": 1, "status": "started"}, tmp_path / "broken" / "eval" / "run.json")
    with pytest.raises(HarnessError, match="status is 'started'"):
        compare_runs([tmp_path / "broken"])


def test_eval_cli_bad_input_is_one_line(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "name": "t",
                "output_dir": str(tmp_path),
                "models": {"clean": str(tiny_model_dir), "corrupt": str(tiny_model_dir)},
                "finetune": {"enabled": False},
            }
        )
    )
    cases = [
        (["--model", "novalue"], "expected NAME=PATH"),
        (["--model", f"v2={tmp_path}/nope"], "does not exist"),
        (["--engine", "tpu"], "expected vllm, vllm-server or hf"),
    ]
    for extra, message in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "eval", str(config), *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
