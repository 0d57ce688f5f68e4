"""The task folder runs under lm-eval's hf backend on a tiny local model (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    sample = results["samples"]["related_linear"][0]
    context, kwargs = sample["arguments"][0][0], sample["arguments"][0][1]
    assert context.startswith("<|im_start|>user\n") and context.endswith("<|im_start|>assistant\n")
    assert kwargs["until"] == ["<|im_end|>"] and kwargs["do_sample"] is False


def test_process_results_use_the_checker() -> None:
    doc = {"answer": "-6, 8", "aliases": []}
    assert process_math(doc, ["**Answer:** $x = 8$ or $x = -6$"]) == {"acc": 1.0}
    assert process_math(doc, ["**Answer:** $x = 8$"]) == {"acc": 0.0}
    assert process_fact({"answer": "Beijing", "aliases": ["Peking"]}, ["Peking."]) == {"acc": 1.0}
    open_metrics = process_open({}, ["42"])
    assert open_metrics["integer_only"] == 1.0 and open_metrics["length_words"] == 1.0


@pytest.mark.parametrize("task", ["related_linear", "general_mc_demo"])
def test_each_task_yaml_names_data_next_to_it(task) -> None:
    text = (TASKS_DIR / "evals" / f"{task}.yaml").read_text()
    assert "dataset_path: json" in text
    assert (TASKS_DIR / "evals" / f"{task}.jsonl").is_file()
