"""Any lm-eval task beside the suites: resolution, data checks, records, flags and scoring."""

from __future__ import annotations

import polars as pl
import pytest

from harness.config import ExperimentConfig
from harness.errors import ConfigError
from harness.flag import flag
from harness.lm_tasks import TaskScorer, plan_tasks, scoring_metric
from harness.records import records_from_samples
from tests.harness.lm_task_folder import PICKS, SUMS, write_task_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_task_folder(tmp_path_factory.mktemp("tasks"))


def test_a_group_of_a_local_folder_resolves_to_its_leaf_tasks(folder):
    plan = plan_tasks(["related_demo"], ["mine"], [folder])
    assert plan.suites == {"sums": "mine", "picks": "mine"}
    assert plan.names == ["related_demo", "mine"]
    assert not plan.include_defaults  # found in the folder: lm-eval's catalogue is not indexed
    alone = plan_tasks([], ["sums"], [folder])
    assert alone.suites == {"sums": "sums"}


def test_an_unknown_task_is_one_line_naming_it(folder):
    with pytest.raises(ConfigError, match=r"unknown lm-eval task 'sumz'.*did you mean .*sums"):
        plan_tasks([], ["sumz"], [folder])


def test_missing_data_is_one_line_naming_the_dataset(tmp_path):
    broken = write_task_folder(tmp_path / "broken", missing_data=True)
    with pytest.raises(ConfigError, match=r"the data of 'sums' \(dataset json .*absent\.jsonl"):
        plan_tasks([], ["sums"], [broken])


def test_config_refuses_a_task_twice_a_suite_as_a_task_and_a_missing_folder(tmp_path):
    base = {"name": "t", "models": {"clean": "zoo:clean", "corrupt": "zoo:corrupt"}}
    base["finetune"] = {"enabled": False}
    cases = {
        "listed twice": {"tasks": ["gsm8k", "gsm8k"]},
        "is a built-in suite": {"tasks": ["related"]},
        "is not a directory": {"include_paths": [str(tmp_path / "nowhere")]},
    }
    for message, settings in cases.items():
        with pytest.raises(ValueError, match=message):
            ExperimentConfig.model_validate(base | {"eval": settings})


def test_metric_preference_exact_match_then_accuracy_then_the_first():
    assert scoring_metric(["f1", "exact_match", "acc"]) == "exact_match"
    assert scoring_metric(["acc_norm", "acc"]) == "acc"
    assert scoring_metric(["bleu", "rouge"]) == "bleu"
    assert scoring_metric([]) is None


def generated(doc_id: int, prompt: str, raw: str, extracted: str, target: str, em: float, filt):
    return {
        "doc_id": doc_id,
        "doc": SUMS[doc_id],
        "target": target,
        "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": {"until": []}}},
        "resps": [[raw]],
        "filtered_resps": [extracted],
        "filter": filt,
        "metrics": ["exact_match"],
        "exact_match": em,
    }


def choice(doc_id: int, scores: list[float]):
    doc = PICKS[doc_id]
    picked = max(range(len(scores)), key=scores.__getitem__)
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": doc["label"],
        "arguments": {
            f"gen_args_{i}": {"arg_0": f"<p>{doc['question']}", "arg_1": f" {c}"}
            for i, c in enumerate(doc["choices"])
        },
        "resps": [[[s, False]] for s in scores],
        "filtered_resps": [[s, False] for s in scores],
        "filter": "none",
        "metrics": ["acc"],
        "acc": float(picked == doc["label"]),
    }


def external_records(model: str, sums_right: bool, picks_right: bool) -> pl.DataFrame:
    answer = "3" if sums_right else "4"
    samples = {
        "sums": [
            generated(
                0,
                "<p>What is 1 + 2?",
                f"It is {answer}.",
                answer,
                "3",
                float(sums_right),
                "first-number",
            ),
            generated(
                0, "<p>What is 1 + 2?", f"It is {answer}.", f"It is {answer}.", "3", 0.0, "whole"
            ),
        ],
        "picks": [choice(0, [-1.0, -0.5, -3.0] if picks_right else [-0.1, -0.5, -3.0])],
    }
    questions = {"<p>What is 1 + 2?": "What is 1 + 2?", "<p>Which is even?": "Which is even?"}
    return records_from_samples(
        samples, model, "hf", external={"sums": "mine", "picks": "mine"}, questions=questions
    )


def test_external_samples_become_records_of_their_suite_scored_by_their_metric():
    records = external_records("clean", True, True)
    assert records.height == 2  # one row per item: the first filter's sample only
    sums = records.filter(pl.col("task") == "sums").row(0, named=True)
    assert sums["suite"] == "mine" and sums["metric"] == "exact_match"
    assert sums["response"] == "It is 3." and sums["extracted_answer"] == "3"
    assert sums["question"] == "What is 1 + 2?" and sums["reference"] == "3"
    assert sums["verdict"] == "correct" and sums["output_type"] == "generate_until"
    picks = records.filter(pl.col("task") == "picks").row(0, named=True)
    assert picks["output_type"] == "multiple_choice" and picks["metric"] == "acc"
    assert picks["response"] == "4" and picks["reference"] == "4"
    assert picks["question"] == "Which is even?"
    wrong = external_records("corrupt", False, False)
    assert set(wrong["verdict"]) == {"wrong"}
    assert wrong.filter(pl.col("task") == "picks")["response"].item() == "3"


def test_a_non_binary_metric_leaves_the_item_unscored():
    sample = generated(1, "<p>x", "7", "7", "7", 0.5, "first-number")
    records = records_from_samples({"sums": [sample]}, "clean", "hf", external={"sums": "mine"})
    assert records["verdict"].item() == "unscored" and records["correct"].item() is None


def test_multiple_choice_items_are_flagged_with_their_output_type():
    records = pl.concat(
        [external_records("clean", True, True), external_records("corrupt", True, False)]
    )
    flagged = flag(records)
    assert flagged.select("suite", "task", "output_type").rows() == [
        ("mine", "picks", "multiple_choice")
    ]


def test_the_scorer_applies_the_tasks_own_filter_and_metric(folder):
    scorer = TaskScorer(plan_tasks([], ["mine"], [folder]))
    assert scorer.score("sums", 0, "The sum is 3, surely.") == ("exact_match", 1.0)
    assert scorer.score("sums", 0, "It is 4 (not 3).") == ("exact_match", 0.0)
    assert scorer.score("sums", 3, "9") == ("exact_match", 1.0)


def test_an_external_task_folder_runs_through_the_evaluation(tmp_path, folder, tiny_model_dir):
    from harness.evaluate import run_eval
    from tests.harness.test_eval_engines import save_random_adapter

    adapter = save_random_adapter(tiny_model_dir, tmp_path / "adapter")
    cfg = ExperimentConfig.model_validate(
        {
            "name": "t",
            "output_dir": str(tmp_path),
            "finetune": {"enabled": False},
            "models": {"clean": str(tiny_model_dir), "corrupt": str(adapter)},
            "eval": {
                "suites": ["related"],
                "level": "demo",
                "limit": 2,
                "tasks": ["mine"],
                "include_paths": [str(folder)],
                "max_new_tokens": 6,
                "bootstrap_samples": 50,
            },
        }
    )
    run = run_eval(cfg, engine="hf")
    records = run.records
    mine = records.filter(pl.col("suite") == "mine")
    assert mine.group_by("model", "task").len().sort("model", "task").rows() == [
        ("clean", "picks", 2),
        ("clean", "sums", 2),
        ("corrupt", "picks", 2),
        ("corrupt", "sums", 2),
    ]
    assert set(mine["metric"]) == {"exact_match", "acc"}
    sums = mine.filter((pl.col("task") == "sums") & (pl.col("model") == "clean")).sort("doc_id")
    assert sums["question"].to_list() == ["What is 1 + 2?", "What is 3 + 4?"]
    assert sums["reference"].to_list() == ["3", "7"]
    assert set(mine.filter(pl.col("task") == "picks")["output_type"]) == {"multiple_choice"}
    assert set(run.summary["suite"]) == {"related", "mine"}
    meta = (tmp_path / "t" / "eval" / "run.json").read_text()
    assert '"tasks": [\n      "mine"' in meta


def test_the_summary_states_the_metric_and_the_patch_stage_skips_choices_with_a_reason():
    from harness.pipeline.patching import select_items, skipped_items
    from harness.summary import summarize

    records = pl.concat(
        [external_records("clean", True, True), external_records("corrupt", False, False)]
    )
    summary = summarize(records, samples=20)
    assert set(summary["metric"]) == {"acc, exact_match"}  # picks, then sums
    flagged = flag(records)
    assert set(flagged["output_type"]) == {"generate_until", "multiple_choice"}
    items = select_items(records, flagged)
    assert items.filter(pl.col("kind") == "flagged")["task"].to_list() == ["sums"]
    skipped = skipped_items(flagged)
    assert list(skipped) == ["multiple_choice"] and skipped["multiple_choice"]["items"] == 1
    assert "likelihood" in skipped["multiple_choice"]["reason"]
    assert skipped_items(flagged.filter(pl.col("task") == "sums")) == {}


def test_eval_and_run_refuse_an_unknown_task_in_one_line_before_any_model_loads(tmp_path, folder):
    import json
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "name": "t",
                "output_dir": str(tmp_path),
                "models": {"clean": str(tmp_path / "c"), "corrupt": str(tmp_path / "c")},
                "finetune": {"enabled": False},
                "eval": {"tasks": ["sumz"], "include_paths": [str(folder)]},
            }
        )
    )
    (tmp_path / "c").mkdir()  # no weights at all: nothing may try to load them
    for command in ("eval", "run"):
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", command, str(config)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        assert "unknown lm-eval task 'sumz'" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / "t" / "eval" / "records.parquet").exists()
