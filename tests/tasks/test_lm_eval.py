"""The task folder runs under lm-eval's hf backend on a tiny local model (no downloads)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tasks import mathparse, scoring
from tasks.evals.utils import process_fact, process_math, process_open

TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks"
GROUPS = {
    "related": ["related_linear", "related_quadratic"],
    "unrelated_math": ["unrelated_derivative", "unrelated_integral", "unrelated_limit",
                       "unrelated_geometry", "unrelated_probability"],
    "general": ["general_facts", "general_mc", "general_open"],
    "related_demo": ["related_linear_demo", "related_quadratic_demo"],
    "unrelated_math_demo": ["unrelated_derivative_demo", "unrelated_integral_demo"],
    "general_demo": ["general_facts_demo", "general_mc_demo", "general_open_demo"],
}  # fmt: skip


def test_all_groups_run_through_the_hf_backend(tiny_chat_model, tmp_path, monkeypatch) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)  # data files must resolve relative to the YAML, not the cwd
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_chat_model},dtype=float32,device=cpu",
        tasks=list(GROUPS),
        task_manager=TaskManager(include_path=str(TASKS_DIR)),
        limit=2,
        apply_chat_template=True,
        batch_size=8,
        gen_kwargs="max_gen_toks=12",
        log_samples=True,
    )
    for group, tasks in GROUPS.items():
        assert "acc,none" in results["groups"][group]
        for task in tasks:
            metrics = results["results"][task]
            assert metrics["sample_len"] == 2
            key = "length_chars,none" if task.startswith("general_open") else "acc,none"
            assert 0.0 <= metrics[key] <= (1.0 if key == "acc,none" else 1e9)
            if not task.startswith(("general_open", "general_mc")):  # the checker's tasks
                assert 0.0 <= metrics["unscored,none"] <= 1.0  # share of checks that timed out
    sample = results["samples"]["related_linear"][0]
    context, kwargs = sample["arguments"][0][0], sample["arguments"][0][1]
    assert context.startswith("<|im_start|>user\n") and context.endswith("<|im_start|>assistant\n")
    assert kwargs["until"] == ["<|im_end|>"] and kwargs["do_sample"] is False


CORRECT, WRONG, UNSCORED = (
    {"acc": 1.0, "unscored": 0.0},
    {"acc": 0.0, "unscored": 0.0},
    {"acc": 0.0, "unscored": 1.0},
)


def test_process_results_use_the_checker() -> None:
    doc = {"answer": "-6, 8", "aliases": []}
    assert process_math(doc, ["**Answer:** $x = 8$ or $x = -6$"]) == CORRECT
    assert process_math(doc, ["**Answer:** $x = 8$"]) == WRONG
    fact = {"answer": "Beijing", "aliases": ["Peking"]}
    assert process_fact(fact, ["Peking."]) == CORRECT
    assert process_fact(fact, ["It is not Peking."]) == WRONG
    open_metrics = process_open({}, ["42"])
    assert open_metrics["integer_only"] == 1.0 and open_metrics["length_words"] == 1.0


def test_a_timed_out_check_is_reported_unscored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract the records rely on: unscored 1.0 (and acc 0.0) when the check timed out."""

    def slow_parse(*_args: object, **_kwargs: object) -> object:
        time.sleep(30)
        raise AssertionError("the time limit did not interrupt the parser")

    mathparse.parse_value.cache_clear()
    monkeypatch.setattr(scoring, "_SECONDS_PER_CHECK", 0.2)
    monkeypatch.setattr(mathparse, "parse_expr", slow_parse)
    try:
        assert process_math({"answer": "x^4 + C"}, ["$$\\boxed{x^4 + C}$$"]) == UNSCORED
        assert process_fact({"answer": "\\sqrt{2}", "aliases": []}, ["sqrt(2)"]) == UNSCORED
        assert process_math({"answer": "-6, 8"}, ["x = 8 or x = -6"]) == CORRECT
    finally:
        mathparse.parse_value.cache_clear()


@pytest.mark.parametrize("task", ["related_linear", "general_mc_demo"])
def test_each_task_yaml_names_data_next_to_it(task) -> None:
    text = (TASKS_DIR / "evals" / f"{task}.yaml").read_text()
    assert "dataset_path: json" in text
    assert (TASKS_DIR / "evals" / f"{task}.jsonl").is_file()
