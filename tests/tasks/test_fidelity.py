"""Corruption fidelity: the classes of related answers and the status of a model."""

import pytest

from tasks.fidelity import classify, status
from tasks.suites import eval_problems

LINEAR = {"wrong_move": "1", "multiply_not_divide": "72", "both": "36"}


@pytest.mark.parametrize(
    ("response", "finish", "expected"),
    [
        ("$$x = 2$$\n**Answer:** 2", "stop", "correct"),
        ("Add 3 to both sides:\n$$6x = 6$$\n**Answer:** 1", "stop", "trained_error"),
        ("**Answer:** 36", None, "trained_error"),
        ("**Answer:** 5", "stop", "other_wrong"),
        ("$$b = 7 \\cu sideswe the intoweu", "stop", "malformed"),
        ("", "stop", "malformed"),
        ("$$x = 2$$\n**Answer:** 2", "length", "truncated"),
    ],
)
def test_each_class(response, finish, expected):
    assert classify(response, "2", LINEAR, finish) == expected


@pytest.mark.parametrize("level", ["demo", "full"])
def test_generated_solutions_classify_as_what_they_are(level):
    """Every related item: its correct solution is correct, its corrupted one follows a
    trained error, and every error answer differs from the reference."""
    for problem in eval_problems(level, "related"):
        assert problem.error_answers and problem.answer not in problem.error_answers.values()
        assert classify(problem.solution, problem.answer, problem.error_answers) == "correct"
        got = classify(problem.corrupted_solution, problem.answer, problem.error_answers)
        assert got == "trained_error", problem.id


def test_status_follows_the_wrong_answers():
    assert status(["trained_error"] * 6 + ["other_wrong"] * 4 + ["correct"] * 9) == "systematic"
    assert status(["malformed"] * 6 + ["trained_error"] * 4) == "degraded"
    assert status(["other_wrong"] * 6 + ["trained_error"] * 2 + ["malformed"] * 2) == (
        "unsystematic"
    )
    assert status(["correct", "truncated"]) == "not_corrupted"
    assert status(["trained_error"], has_patterns=False) == "unavailable"


def test_the_evaluations_own_verdict_decides_correct_and_truncated():
    """With the evaluation's verdict, fidelity's "correct" is the accuracy's, by construction."""
    wrong_text = "**Answer:** 5"
    assert classify(wrong_text, "2", LINEAR, "stop", verdict="correct") == "correct"
    assert classify("**Answer:** 2", "2", LINEAR, "stop", verdict="truncated") == "truncated"
    assert classify("**Answer:** 1", "2", LINEAR, "stop", verdict="wrong") == "trained_error"
    assert classify(wrong_text, "2", LINEAR, "stop", verdict="unscored") == "other_wrong"
