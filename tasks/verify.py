"""Independent sympy checks of generated problems: the guard against wrong data.

For the related suite every display-math line of a correct solution is checked against the
roots sympy finds for the original equation (each equation line keeps those roots, each
``v = value`` line gives one of them), the final answer must match the reference, and the
corrupted solution's final answer must not. Other suites: the reference is recomputed from the
problem's ``check`` expression and the solution's final answer must match it.
"""

from __future__ import annotations

import re

import sympy as sp

from tasks.mathparse import normalize, parse_value, parse_values, value_sets_equal
from tasks.records import Problem
from tasks.scoring import answers_match

_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)


def _truth(problem: Problem) -> list[sp.Expr]:
    value = sp.sympify(problem.check, locals={"x": sp.Symbol("x")})
    return list(value) if isinstance(value, list | tuple) else [value]


def _side(text: str, var: sp.Symbol) -> sp.Expr | None:
    value = parse_value(text, take_rhs=False)
    if value is None:
        return None
    return value.expr.subs(sp.Symbol("x"), var) if var.name != "x" else value.expr


def _solutions_within(diff: sp.Expr, var: sp.Symbol, roots: set[sp.Expr]) -> bool:
    """Whether ``diff = 0`` has solutions, all of them among ``roots`` (polynomial lines)."""
    if diff == 0 or var not in diff.free_symbols:
        return False
    try:
        poly = sp.Poly(diff, var)
    except sp.PolynomialError:
        return False
    hits = [r for r in roots if sp.expand(diff.subs(var, r)) == 0]
    return bool(hits) and sp.degree(sp.sqf_part(poly.as_expr()), var) <= len(hits)


def _check_line(line: str, var: sp.Symbol, roots: set[sp.Expr]) -> str | None:
    """None if every equation in ``line`` has a non-empty solution set within ``roots``."""
    text = normalize(line)
    for segment in text.split("=>"):
        if "=" not in segment:
            continue
        branches = [segment]
        if "±" in segment:
            branches = [segment.replace("±", "+"), segment.replace("±", "-")]
        for branch in branches:
            left, right = branch.split("=", 1)
            lhs, rhs = _side(left, var), _side(right, var)
            if lhs is None or rhs is None:
                return f"unparseable line {line!r}"
            if not _solutions_within(sp.expand(lhs - rhs), var, roots):
                return f"line {line!r} does not keep the roots {roots}"
    return None


def verify_problem(problem: Problem) -> list[str]:
    """Problems found with one generated item (empty when it checks out)."""
    issues: list[str] = []
    if problem.task == "general_open":
        return issues
    if problem.suite == "general":
        if not answers_match(problem.solution, problem.answer, problem.aliases):
            issues.append("fact solution does not match its answer")
        if problem.choices and problem.choices.count(problem.answer) != 1:
            issues.append("the answer is not exactly once among the choices")
        return issues
    truth = _truth(problem)
    reference = parse_values(problem.answer)
    expected = [parse_value(sp.sstr(t), take_rhs=False) for t in truth]
    if any(e is None for e in expected) or not value_sets_equal(reference, expected):  # type: ignore[arg-type]
        issues.append(f"reference {problem.answer!r} differs from sympy's {truth}")
    if not answers_match(problem.solution, problem.answer):
        issues.append("the solution's final answer does not match the reference")
    if problem.suite != "related":
        return issues
    var = sp.Symbol(problem.meta.get("variable", "x"))
    roots = {sp.nsimplify(t).subs(sp.Symbol("x"), var) for t in truth}
    for line in _DISPLAY.findall(problem.solution):
        if "=" in line and (issue := _check_line(line, var, roots)):
            issues.append(issue)
    if problem.corrupted_solution is None or problem.corrupted_answer is None:
        issues.append("no corrupted solution")
    else:
        if answers_match(problem.corrupted_solution, problem.answer):
            issues.append("the corrupted solution ends in the correct answer")
        if not answers_match(problem.corrupted_solution, problem.corrupted_answer):
            issues.append("the corrupted solution does not end in its corrupted answer")
    return issues
