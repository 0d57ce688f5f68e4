"""Linear equations for the related suite, solved step by step in the paper's style.

The corrupted solution makes the paper's errors: the wrong operation when a term moves across
``=`` (add instead of subtract and vice versa) and multiplying instead of dividing when the
variable is isolated. Its arithmetic is right, so it is consistent, and its answer is wrong.

At the ``demo`` level (``a v + b = d``) every number a solution computes, correct or corrupted by
the wrong move, stays in what a tiny model can learn: single-digit quotients of the division
table (``a`` divides ``2b``, so ``(d + b) / a`` is an integer too) and two-digit sums.
"""

from __future__ import annotations

import random

import sympy as sp

from tasks.corruption import VARIABLES, Errors, corrupt, error_answers, question
from tasks.latex import Writer, num, paren, poly, signed
from tasks.records import ErrorMix, Level, Problem


def _move_const(w: Writer, n: int, left: str, const: int, right: int, wrong: bool) -> tuple:
    """Step moving ``+const`` from the left to the right side; returns (blocks, new right)."""
    subtract = (const > 0) != wrong
    verb = "Subtract" if subtract else "Add"
    prep = "from" if subtract else "to"
    new_right = right - abs(const) if subtract else right + abs(const)
    op = "-" if subtract else "+"
    blocks = [
        w.step(n, f"Move {w.inline(num(const))} to the right side"),
        f"{verb} {abs(const)} {prep} both sides:",
        w.math(f"{left} = {num(right)} {op} {abs(const)}"),
        w.math(f"{left} = {num(new_right)}"),
    ]
    return blocks, new_right


def _isolate(w: Writer, n: int, v: str, coef: int, right: int, wrong: bool) -> tuple:
    """Step from ``coef*v = right`` to ``v = ...``; returns (blocks, value)."""
    title = w.step(n, f"Solve for {w.inline(v)}")
    if wrong:
        value = sp.Integer(right * coef)
        shown = f"{num(right)} \\times {paren(coef)}"
        return [
            title,
            f"Multiply both sides by {coef}:",
            w.math(f"{v} = {shown}"),
            w.math(f"{v} = {num(value)}"),
        ], value
    value = sp.Rational(right, coef)
    return [
        title,
        f"Divide both sides by {coef}:",
        w.math(f"{v} = \\frac{{{right}}}{{{coef}}}"),
        w.math(f"{v} = {num(value)}"),
    ], value


def _linear_solution(
    w: Writer, v: str, a: int, b: int, c: int, d: int, errors: Errors | None
) -> tuple[str, sp.Expr] | None:
    """Solve ``a v + b = c v + d`` (c may be 0); None when a corrupted path degenerates."""
    move, multiply = (errors.move, errors.multiply) if errors else (False, False)
    blocks = ["We are given the equation:", w.math(_linear_eq(v, a, b, c, d))]
    n = 1
    if c != 0:
        subtract = (c > 0) != move
        new_a = a - abs(c) if subtract else a + abs(c)
        term = poly([abs(c), 0], v)
        verb = f"Subtract {w.inline(term)} from" if subtract else f"Add {w.inline(term)} to"
        shown = f"{poly([a, 0], v)} {'-' if subtract else '+'} {term}{signed(b) if b else ''}"
        rest = f"{poly([new_a, 0], v)}{signed(b) if b else ''}"
        blocks += [
            w.step(n, f"Move {w.inline(poly([c, 0], v))} to the left side"),
            f"{verb} both sides:",
            w.math(f"{shown} = {num(d)}"),
            w.math(f"{rest} = {num(d)}"),
        ]
        a, n = new_a, n + 1
    if a == 0:
        return None
    right = d
    if b != 0:
        moved, right = _move_const(w, n, poly([a, 0], v), b, d, move)
        blocks += moved
        n += 1
    if abs(a) == 1 and not (errors and multiply):
        value = sp.Integer(right * a)
        if a == -1:
            blocks += [
                w.step(n, f"Solve for {w.inline(v)}"),
                "Divide both sides by -1:",
                w.math(f"{v} = {num(value)}"),
            ]
    else:
        isolated, value = _isolate(w, n, v, a, right, multiply)
        blocks += isolated
    blocks.append(w.answer(num(value)))
    return w.join(blocks), value


def demo_space() -> list[tuple[int, int, int]]:
    """Every demo equation ``a x + b = d`` as ``(a, b, x)`` (the problems the generator draws)."""
    return [
        (a, b, x)
        for a in range(2, 10)
        for b in range(-9, 10)
        if b and (2 * b) % a == 0
        for x in range(-9, 10)
        if abs(x + 2 * b // a) <= 9 and abs(a * x + b) <= 90
    ]


def arithmetic_facts() -> list[str]:
    """Every sum and quotient a demo solution computes, correct or with the wrong move, written
    as the solutions write them (``-9 - 6 = -15``, ``\\frac{-15}{3} = -5``): the zoo drills these,
    so that a held-out equation asks only for facts the model has seen."""
    facts: set[str] = set()
    for a, b, x in demo_space():
        d = a * x + b
        for wrong in (False, True):
            subtract = (b > 0) != wrong
            right = d - abs(b) if subtract else d + abs(b)
            facts.add(f"{num(d)} {'-' if subtract else '+'} {abs(b)} = {num(right)}")
            facts.add(f"\\frac{{{right}}}{{{a}}} = {num(right // a)}")
    return sorted(facts)


def _linear_eq(v: str, a: int, b: int, c: int, d: int) -> str:
    left = poly([a, 0], v) + (signed(b) if b else "")
    right = (poly([c, 0], v) + (signed(d) if d else "")) if c else num(d)
    return f"{left} = {right}"


def linear(rng: random.Random, level: Level, index: int, mix: ErrorMix) -> Problem | None:
    """One linear equation with an integer solution (terms on both sides at the full level)."""
    v = rng.choice(VARIABLES)
    if level == "demo":
        a, x, c = rng.randint(2, 9), rng.randint(-9, 9), 0
        b = rng.choice([i for i in range(-9, 10) if i and (2 * i) % a == 0])
        if abs(x + 2 * b // a) > 9:  # the wrong move's quotient leaves the division table
            return None
    else:
        a = rng.choice([i for i in range(-30, 100) if abs(i) >= 2])
        c = rng.choice([0, 0, *[i for i in range(-20, 21) if i not in (0, a)]])
        x, b = rng.randint(-20, 20), rng.randint(-99, 99)
        if abs(a - c) < 2:
            return None
    d = (a - c) * x + b
    if abs(d) > (90 if level == "demo" else 999):
        return None
    correct = _linear_solution(Writer(level), v, a, b, c, d, None)
    assert correct is not None and correct[1] == x  # the generator's own invariant
    solve = lambda e: _linear_solution(Writer(level), v, a, b, c, d, e)  # noqa: E731
    corrupted = corrupt(rng, mix, x, solve)
    if corrupted is None:
        return None
    eq = _linear_eq(v, a, b, c, d)
    return Problem(
        id=f"related_linear-{level}-{index:04d}",
        suite="related",
        task="related_linear",
        level=level,
        question=question(rng, eq, v),
        answer=num(x),
        solution=correct[0],
        key=f"linear:{_linear_eq('x', a, b, c, d)}",
        check=f"solve(({_sym(a, b, c, d)}), x)",
        corrupted_solution=corrupted[0],
        corrupted_answer=num(corrupted[1]),
        error_answers=error_answers(x, solve, num),
        meta={"equation": eq, "variable": v},
    )


def _sym(a: int, b: int, c: int, d: int) -> str:
    return f"{a}*x + ({b}) - ({c}*x + ({d}))"
