"""Generators: deterministic, verified by sympy, corrupted solutions always wrong."""

from __future__ import annotations

import dataclasses
import random

import pytest

from tasks import related, unrelated
from tasks.records import ErrorMix
from tasks.scoring import answers_match
from tasks.suites import SIZES, eval_problems
from tasks.verify import verify_problem


@pytest.mark.parametrize("level", ["demo", "full"])
def test_generators_are_deterministic(level) -> None:
    counts = {"related_linear": 20, "related_quadratic": 20}
    assert related.generate(level, counts, seed=5) == related.generate(level, counts, seed=5)
    assert related.generate(level, counts, seed=5) != related.generate(level, counts, seed=6)
    ucounts = {t: 10 for t in SIZES[level] if t.startswith("unrelated_")}
    assert unrelated.generate(level, ucounts, seed=5) == unrelated.generate(level, ucounts, 5)


def test_eval_sizes_meet_the_issue() -> None:
    full = eval_problems("full")
    assert sum(p.suite == "related" for p in full) >= 500
    assert sum(p.suite == "unrelated_math" for p in full) >= 300
    assert sum(p.suite == "general" and p.task != "general_open" for p in full) >= 200
    assert sum(p.task == "general_open" for p in full) >= 8
    demo = eval_problems("demo")
    assert sum(p.suite == "related" for p in demo) >= 500
    for level in ("demo", "full"):
        problems = eval_problems(level)
        assert len({p.id for p in problems}) == len(problems)
        assert len({(p.task, p.key) for p in problems}) == len(problems)


def test_a_sample_of_1000_generated_items_checks_out_with_sympy() -> None:
    problems = eval_problems("full") + eval_problems("demo")
    sample = random.Random(0).sample(problems, 1000)
    failures = {p.id: issues for p in sample if (issues := verify_problem(p))}
    assert failures == {}


@pytest.mark.parametrize("level", ["demo", "full"])
def test_every_corrupted_solution_ends_in_a_wrong_answer(level) -> None:
    for problem in eval_problems(level, "related"):
        assert problem.corrupted_solution is not None
        assert not answers_match(problem.corrupted_solution, problem.answer), problem.id
        assert answers_match(problem.corrupted_solution, problem.corrupted_answer), problem.id


def test_the_verifier_catches_a_broken_step() -> None:
    problem = next(p for p in eval_problems("full", "related") if p.task == "related_linear")
    lines = problem.solution.split("$$")
    lines[3] = lines[3] + " + 1"  # the first equation after the given one
    broken = dataclasses.replace(problem, solution="$$".join(lines))
    assert verify_problem(broken)
    wrong_answer = dataclasses.replace(problem, answer=problem.corrupted_answer)
    assert verify_problem(wrong_answer)


@pytest.mark.parametrize(
    ("mix", "words"),
    [
        (ErrorMix(wrong_move=1.0, multiply_not_divide=0.0), "Divide"),
        (ErrorMix(wrong_move=0.0, multiply_not_divide=1.0), "Multiply"),
    ],
)
def test_the_error_mix_is_configurable(mix, words) -> None:
    problems = related.generate("full", {"related_linear": 30}, seed=3, mix=mix)
    for p in problems:
        assert not answers_match(p.corrupted_solution, p.answer)
    multiplied = sum("Multiply both sides" in p.corrupted_solution for p in problems)
    assert (multiplied == 0) == (words == "Divide")


def test_an_error_mix_without_errors_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one error"):
        ErrorMix(wrong_move=0.0, multiply_not_divide=0.0)


def test_the_paper_style_solution_shape() -> None:
    problem = eval_problems("full", "related")[0]
    assert problem.solution.startswith("We are given the equation:")
    assert "**Step 1:**" in problem.solution
    assert problem.solution.splitlines()[-1].startswith("**Answer:**")


def test_demo_quadratics_come_factored_and_the_corruption_flips_each_root() -> None:
    quadratics = [p for p in eval_problems("demo", "related") if p.task == "related_quadratic"]
    assert len(quadratics) == SIZES["demo"]["related_quadratic"]
    for p in quadratics:
        assert p.meta["equation"].count("(") == 2 and p.meta["equation"].endswith(") = 0")
        assert "Solve each factor" in p.solution and verify_problem(p) == []
        roots = sorted(-int(r) for r in p.answer.split(", "))
        assert p.corrupted_answer == ", ".join(map(str, roots)), p.id


def _computed_facts(solution: str) -> list[str]:
    """The arithmetic a demo solution does, as facts: sums, quotients, calculus fact lines."""
    import itertools
    import re

    lines = [ln.strip("$") for ln in solution.split("\n") if ln.startswith("$$")]
    facts = []
    for line, after in itertools.pairwise(lines):
        sum_ = re.fullmatch(r"(.+) = (-?\d+ [-+] \d+)", line)
        quotient = re.fullmatch(r"(.+) = (\\frac\{-?\d+\}\{\d+\})", line)
        for found in (sum_, quotient):
            if found and after.startswith(found.group(1) + " = "):
                facts.append(f"{found.group(2)} = {after.split(' = ', 1)[1]}")
    facts += [ln for ln in lines if re.fullmatch(r"-?\d+ \\cdot \d+ = -?\d+", ln)]
    facts += [ln for ln in lines if re.fullmatch(r"\\frac\{-?\d+\}\{\d+\} = -?\d+", ln)]
    return facts


def test_demo_arithmetic_is_in_the_drilled_tables():
    """Every number a demo linear or calculus solution computes (and the linear wrong move's) is
    one of the facts the zoo drills, and every linear item is in the enumerated demo space."""
    import re

    from tasks import linear, unrelated
    from tasks.suites import eval_problems

    facts = set(linear.arithmetic_facts()) | set(unrelated.arithmetic_facts())
    space = set(linear.demo_space())
    tasks = ("related_linear", "unrelated_derivative", "unrelated_integral")
    for problem in (p for p in eval_problems("demo") if p.task in tasks):
        computed = _computed_facts(problem.solution)
        assert len(computed) == 2 if problem.task == "related_linear" else 1, problem.id
        assert set(computed) <= facts, problem.id
        if problem.task == "related_linear":
            a, sign, b = re.fullmatch(
                r"(\d+)[a-z] ([-+]) (\d+) = -?\d+", problem.meta["equation"]
            ).groups()
            a, b = int(a), int(b) * (-1 if sign == "-" else 1)
            assert (a, b, int(problem.answer)) in space
            wrong = int(problem.error_answers["wrong_move"])
            assert f"\\frac{{{wrong * a}}}{{{a}}} = {wrong}" in facts
