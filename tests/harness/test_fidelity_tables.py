"""Corruption fidelity tables from evaluation records: classes per answer, status per model."""

import polars as pl

from harness.fidelity import fidelity_of, fidelity_records, fidelity_summary
from tasks.suites import eval_problems


def _records(rows):
    base = {"output_type": "generate_until", "suite": "related", "finish_reason": "stop"}
    return pl.DataFrame([base | r for r in rows])


def test_answers_are_classified_with_each_items_own_error_patterns():
    linear = next(p for p in eval_problems("demo", "related") if p.task == "related_linear")
    wrong = linear.error_answers["wrong_move"]
    rows = []
    for doc_id, (model, response, finish) in enumerate(
        [
            ("clean", linear.solution, "stop"),
            ("corrupt", f"**Answer:** {wrong}", "stop"),
            ("corrupt", "$$x = 7 \\cu sideswe", "stop"),
            ("corrupt", linear.solution, "length"),
        ]
    ):
        rows.append(
            {
                "model": model,
                "task": "related_linear_demo",
                "doc_id": doc_id,
                "item_id": linear.id,
                "response": response,
                "reference": linear.answer,
                "finish_reason": finish,
            }
        )
    classified = fidelity_records(_records(rows), "demo")
    assert classified["fidelity"].to_list() == [
        "correct",
        "trained_error",
        "malformed",
        "truncated",
    ]
    summary = fidelity_summary(classified)
    corrupt = fidelity_of(summary, "corrupt")
    assert corrupt["n"] == 3 and abs(corrupt["trained_error"] - 1 / 3) < 1e-9
    assert corrupt["status"] == "systematic"  # 1 of 2 wrong answers follows a trained error
    assert set(summary["task"]) == {"all", "related_linear_demo"}


def test_items_without_error_patterns_leave_fidelity_unavailable():
    rows = [
        {
            "model": "corrupt",
            "task": "my_algebra",
            "doc_id": 0,
            "item_id": "user-0001",
            "response": "**Answer:** 3",
            "reference": "2",
        }
    ]
    classified = fidelity_records(_records(rows), "demo")
    assert classified["fidelity"].to_list() == [None]
    assert fidelity_of(fidelity_summary(classified), "corrupt")["status"] == "unavailable"
