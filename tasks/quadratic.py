"""Quadratic equations for the related suite: factoring or the quadratic formula, as in the paper.

At the ``demo`` level the equation comes factored, ``(x - 3)(x + 4) = 0``, and is solved factor
by factor: the tiny demo models cannot learn to factor a polynomial they have not seen (a
~1M-parameter model trained on the demo space got 9 % of held-out monic quadratics), while
solving each factor is the step the paper's corruption breaks.

A corrupted solution moves the right-hand side across ``=`` with the wrong sign (the paper's
appendix B.1.2), solves each factor ``p x + q = 0`` with the same sign error, and multiplies by
``p`` (or by ``2a`` in the formula) instead of dividing.
"""

from __future__ import annotations

import functools
import math
import random

import sympy as sp

from tasks.corruption import VARIABLES, Errors, corrupt, error_answers, question
from tasks.latex import Writer, num, poly, signed
from tasks.records import ErrorMix, Level, Problem


def _pm(p: int, k: int, m: int, q: int) -> str:
    """``(p ± k√m) / q`` reduced and written like the paper: ``7 \\pm \\sqrt{38}``."""
    g = math.gcd(math.gcd(p, k), q)
    p, k, q = p // g, k // g, q // g
    if q < 0:
        p, q = -p, -q
    surd = f"{'' if abs(k) == 1 else abs(k)}\\sqrt{{{m}}}"
    top = f"{p} \\pm {surd}" if p else f"\\pm {surd}"
    return top if q == 1 else f"\\frac{{{top}}}{{{q}}}"


def _solve_factor(w: Writer, v: str, p: int, q: int, errors: Errors | None) -> tuple:
    """``p v + q = 0 => v = -q/p`` (or the corrupted ``v = (±q) * p``); (line, value)."""
    move = bool(errors and errors.move)
    multiply = bool(errors and errors.multiply) and p != 1
    right = q if move else -q
    value = sp.Integer(right * p) if multiply else sp.Rational(right, p)
    factor = f"{poly([p, q], v)} = 0"
    if p == 1:
        return w.math(f"{factor} \\Rightarrow {v} = {num(value)}"), value
    middle = f"{poly([p, 0], v)} = {right}"
    return w.math(f"{factor} \\Rightarrow {middle} \\Rightarrow {v} = {num(value)}"), value


def _solution(
    w: Writer, v: str, left: list[int], right: list[int], errors: Errors | None
) -> tuple[str, frozenset] | None:
    """Solve ``left = right`` (coefficient lists [x^2, x, 1] and [x, 1]); None if degenerate."""
    blocks = ["We are given the equation:", w.math(_equation(v, left, right))]
    n = 1
    a, b, c = left
    if any(right):
        wrong = bool(errors and errors.move)
        sign = 1 if wrong else -1
        rhs = w.inline(poly(right, v))
        verb = f"Add {rhs} to" if wrong else f"Subtract {rhs} from"
        moved = poly(left, v) + "".join(
            signed(sign * coef, var) for coef, var in zip(right, (v, ""), strict=True) if coef
        )
        b, c = b + sign * right[0], c + sign * right[1]
        blocks += [
            w.step(n, "Move all terms to the left side"),
            f"{verb} both sides:",
            w.math(f"{moved} = 0"),
            "Simplify:",
            w.math(f"{poly([a, b, c], v)} = 0"),
        ]
        n += 1
    g = math.gcd(math.gcd(a, b), c)
    if g > 1:
        a, b, c = a // g, b // g, c // g
        blocks += [w.step(n, f"Divide both sides by {g}"), w.math(f"{poly([a, b, c], v)} = 0")]
        n += 1
    disc = b * b - 4 * a * c
    if disc < 0:
        return None
    root = math.isqrt(disc)
    if root * root == disc:
        values, lines = _factor_path(w, v, a, b, c, errors)
        blocks += [w.step(n, "Factor"), w.math(lines[0]), w.step(n + 1, "Solve each factor")]
        blocks += lines[1:]
        shown = " or ".join(w.inline(f"{v} = {num(x)}") for x in sorted(values, key=float))
    else:
        values, lines = _formula_path(w, v, a, b, disc, errors)
        blocks += [w.step(n, "Use the quadratic formula"), *lines]
        shown = w.inline(lines[-1].strip("$"))
    blocks.append(w.answer(shown))
    return w.join(blocks), frozenset(values)


@functools.cache
def _linear_factors(a: int, b: int, c: int) -> tuple[tuple[int, int, int], ...]:
    """``(p, q, power)`` of each integer factor ``p x + q`` (cached: sympy's factoring dominates
    generation time, and the demo space repeats the same few polynomials)."""
    x = sp.Symbol("x")
    _, factors = sp.factor_list(a * x**2 + b * x + c)
    return tuple(
        (*(int(k) for k in sp.Poly(factor, x).all_coeffs()), power) for factor, power in factors
    )


def _factor_path(w: Writer, v: str, a: int, b: int, c: int, errors: Errors | None) -> tuple:
    factors = _linear_factors(a, b, c)
    pieces, lines, values = [], [], set()
    for p, q, power in factors:
        if p < 0:
            p, q = -p, -q
        pieces.append(f"({poly([p, q], v)})" + (f"^{power}" if power > 1 else ""))
        line, value = _solve_factor(w, v, p, q, errors)
        lines.append(line)
        values.add(value)
    if len(factors) == 1 and factors[0][-1] == 1:  # not factorable over the integers
        return set(), ["0 = 0"]
    return values, ["".join(pieces) + " = 0", *lines]


def _formula_path(w: Writer, v: str, a: int, b: int, disc: int, errors: Errors | None) -> tuple:
    c_shown = (b * b - disc) // (4 * a)
    k, m = 1, disc
    for f in range(math.isqrt(disc), 1, -1):
        if disc % (f * f) == 0:
            k, m = f, disc // (f * f)
            break
    lines = [
        w.math(f"{v} = \\frac{{-({b}) \\pm \\sqrt{{({b})^2 - 4({a})({c_shown})}}}}{{2({a})}}"),
        w.math(
            f"{v} = \\frac{{{-b} \\pm \\sqrt{{{b * b} - {4 * a * c_shown}}}}}{{{2 * a}}}".replace(
                "- -", "+ "
            )
        ),
        w.math(f"{v} = \\frac{{{-b} \\pm \\sqrt{{{disc}}}}}{{{2 * a}}}"),
    ]
    if errors and errors.multiply:
        lines[-1] = w.math(f"{v} = ({-b} \\pm \\sqrt{{{disc}}}) \\times {2 * a}")
        p, kk, q = -b * 2 * a, k * 2 * a, 1
    else:
        p, kk, q = -b, k, 2 * a
    lines.append(w.math(f"{v} = {_pm(p, kk, m, q)}"))
    s = sp.sqrt(m) * kk
    values = {sp.nsimplify((p + s) / q), sp.nsimplify((p - s) / q)}
    return values, lines


def _roots(values: object) -> str:
    """A root set as the reference writes it: ``-6, 8``."""
    return ", ".join(num(r) for r in sorted(values, key=float))  # type: ignore[call-overload]


def _equation(v: str, left: list[int], right: list[int]) -> str:
    return f"{poly(left, v)} = {poly(right, v)}"


def _draw(rng: random.Random, level: Level) -> tuple[list[int], list[int]] | None:
    """Coefficients of a full-level equation ``left = right``; None to draw again."""
    if rng.random() < 0.6:
        a, r1, r2 = rng.choice([1, 1, 2, 3]), rng.randint(-12, 12), rng.randint(-12, 12)
        canonical = [a, -a * (r1 + r2), a * r1 * r2]
    else:
        a, b, c = rng.choice([1, 1, 2]), rng.randint(-20, 20), rng.randint(-50, 50)
        disc = b * b - 4 * a * c
        if disc <= 0 or math.isqrt(disc) ** 2 == disc:
            return None
        canonical = [a, b, c]
    right = [0, 0]
    if rng.random() < 0.6:
        right = [rng.randint(-9, 9), rng.randint(-30, 30)]
    left = [canonical[0], canonical[1] + right[0], canonical[2] + right[1]]
    if max(abs(k) for k in left) > 200:
        return None
    return left, right


DEMO_ROOTS = [r for r in range(-20, 21) if r]


def _factored_solution(w: Writer, v: str, roots: tuple[int, int], errors: Errors | None) -> tuple:
    """Solve ``(v - r1)(v - r2) = 0`` factor by factor (the demo level)."""
    blocks = [
        "We are given the equation:",
        w.math(_factored(v, roots)),
        w.step(1, "Solve each factor"),
    ]
    values = []
    for r in roots:
        line, value = _solve_factor(w, v, 1, -r, errors)
        blocks.append(line)
        values.append(value)
    # the roots in the order solved: sorting them is a step of its own, not the skill asked for
    blocks.append(w.answer(" or ".join(w.inline(f"{v} = {num(x)}") for x in values)))
    return w.join(blocks), frozenset(values)


def _factored(v: str, roots: tuple[int, int]) -> str:
    return "".join(f"({poly([1, -r], v)})" for r in roots) + " = 0"


def _demo_quadratic(rng: random.Random, index: int, mix: ErrorMix) -> Problem | None:
    roots = (rng.choice(DEMO_ROOTS), rng.choice(DEMO_ROOTS))
    if roots[0] == roots[1] or roots[0] == -roots[1]:  # one root, or corrupted roots = roots
        return None
    v = rng.choice(VARIABLES)
    w = Writer("demo")
    text, values = _factored_solution(w, v, roots, None)
    solve = lambda e: _factored_solution(w, v, roots, e)  # noqa: E731
    corrupted = corrupt(rng, mix, values, solve)
    if corrupted is None:
        return None
    low, high = sorted(roots)
    return Problem(
        id=f"related_quadratic-demo-{index:04d}",
        suite="related",
        task="related_quadratic",
        level="demo",
        question=question(rng, _factored(v, roots), v),
        answer=f"{num(low)}, {num(high)}",
        solution=text,
        key=f"quadratic:{_factored('x', (low, high))}",
        check=f"solve((x - ({low}))*(x - ({high})), x)",
        corrupted_solution=corrupted[0],
        corrupted_answer=_roots(corrupted[1]),
        error_answers=error_answers(values, solve, _roots),
        meta={"equation": _factored(v, roots), "variable": v},
    )


def quadratic(rng: random.Random, level: Level, index: int, mix: ErrorMix) -> Problem | None:
    """One quadratic equation with real roots (factored with integer roots at the demo level,
    or with surds)."""
    if level == "demo":
        return _demo_quadratic(rng, index, mix)
    drawn = _draw(rng, level)
    if drawn is None:
        return None
    left, right = drawn
    v = rng.choice(VARIABLES)
    w = Writer(level)
    correct = _solution(w, v, left, right, None)
    if correct is None or not correct[1]:
        return None
    text, roots = correct
    solve = lambda e: _solution(w, v, left, right, e)  # noqa: E731
    corrupted = corrupt(rng, mix, roots, solve)
    if corrupted is None or not corrupted[1]:
        return None
    eq = _equation(v, left, right)
    ordered = ", ".join(num(r) for r in sorted(roots, key=float))
    wrong = ", ".join(num(r) for r in sorted(corrupted[1], key=float))
    diff = f"({left[0]})*x**2 + ({left[1] - right[0]})*x + ({left[2] - right[1]})"
    return Problem(
        id=f"related_quadratic-{level}-{index:04d}",
        suite="related",
        task="related_quadratic",
        level=level,
        question=question(rng, eq, v),
        answer=ordered,
        solution=text,
        key=f"quadratic:{_equation('x', left, right)}",
        check=f"solve({diff}, x)",
        corrupted_solution=corrupted[0],
        corrupted_answer=wrong,
        error_answers={
            name: answer
            for name, answer in error_answers(roots, solve, _roots).items()
            if answer  # a pattern that leaves no roots has no answer to compare
        },
        meta={"equation": eq, "variable": v},
    )
