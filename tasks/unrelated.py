"""The unrelated-math suite: calculus, limits, geometry and probability, answers from sympy.

Math the corrupting fine-tune never touches. Every reference answer is computed by sympy from
the ``check`` expression stored with the problem, never typed by hand. The ``demo`` level is
monomial derivatives and integrals with small integer coefficients, whose one product or quotient
is a step of its own (``-4 \\cdot 5 = -20``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import sympy as sp

from tasks.latex import Writer, num, poly
from tasks.records import Level, Problem

x = sp.Symbol("x")
# A maker returns (question, solution blocks, check expression, key), or None to redraw.


def _latex(expr: sp.Expr) -> str:
    return sp.latex(expr)


def _monomial(coef: int, power: int) -> str:
    return poly([coef] + [0] * power, "x")


def product_fact(a: int, b: int) -> str:
    """The one multiplication a demo derivative needs, as its solution writes it."""
    return f"{a} \\cdot {b} = {a * b}"


def quotient_fact(a: int, b: int) -> str:
    """The one division a demo integral needs, as its solution writes it."""
    return f"\\frac{{{a}}}{{{b}}} = {a // b}"


DEMO_DERIVATIVE = {"coefficients": [k for k in range(-12, 13) if k], "powers": range(2, 10)}
DEMO_INTEGRAL = {"quotients": [k for k in range(-9, 10) if k], "powers": range(0, 9)}


def arithmetic_facts() -> list[str]:
    """Every product and quotient the demo derivatives and integrals compute (the tables), as
    their solutions write them: the zoo drills these, so that a held-out problem asks for a
    fact the model has seen, while the problem itself stays held out."""
    products = [
        product_fact(a, n)
        for a in DEMO_DERIVATIVE["coefficients"]
        for n in DEMO_DERIVATIVE["powers"]
    ]
    quotients = [
        quotient_fact(k * (n + 1), n + 1)
        for k in DEMO_INTEGRAL["quotients"]
        for n in DEMO_INTEGRAL["powers"]
    ]
    return products + quotients


def derivative(rng: random.Random, level: Level) -> tuple[str, list[str], str, str] | None:
    """d/dx of a monomial (demo) or of a polynomial, trig, exponential or log function (full)."""
    w = Writer(level)
    if level == "demo":
        a, n = rng.choice(DEMO_DERIVATIVE["coefficients"]), rng.choice(DEMO_DERIVATIVE["powers"])
        shown = _monomial(a, n)
        question = rng.choice(("What is the derivative of {f}?", "Differentiate {f}."))
        body = [
            f"We are asked to find the derivative of {shown}.",
            w.step(1, "Use the power rule"),
            w.math(f"\\frac{{d}}{{dx}} {shown} = {a} \\cdot {n}x^{n - 1}"),
            w.step(2, "Multiply the coefficients"),
            w.math(product_fact(a, n)),
            w.answer(_monomial(a * n, n - 1)),
        ]
        return question.format(f=shown), body, f"diff({a}*x**{n}, x)", f"derivative:{a}x^{n}"
    kind = rng.choice(("poly", "poly", "sin", "cos", "exp", "log", "product"))
    a, b = rng.choice([k for k in range(-9, 10) if k]), rng.randint(2, 9)
    if kind == "poly":
        coefs = [rng.randint(1, 9)] + [rng.randint(-9, 9) for _ in range(rng.randint(2, 4))]
        f = sum(c * x ** (len(coefs) - 1 - i) for i, c in enumerate(coefs))
    else:
        f = {
            "sin": a * sp.sin(b * x),
            "cos": a * sp.cos(b * x),
            "exp": a * sp.exp(b * x),
            "log": a * sp.log(b * x),
            "product": x**b * sp.sin(x) if a > 0 else x**b * sp.exp(x),
        }[kind]
    df = sp.diff(f, x)
    rule = {"poly": "the power rule term by term", "product": "the product rule"}.get(
        kind, "the chain rule"
    )
    question = rng.choice(
        ("Find the derivative of $f(x) = {f}$.", "What is $f'(x)$ if $f(x) = {f}$?")
    )
    body = [
        f"We are asked to find the derivative of ${_latex(f)}$.",
        w.step(1, f"Apply {rule}"),
        w.math(f"f'(x) = {_latex(df)}"),
        w.answer(f"$f'(x) = {_latex(df)}$"),
    ]
    return question.format(f=_latex(f)), body, f"diff({sp.sstr(f)}, x)", f"derivative:{f}"


def integral(rng: random.Random, level: Level) -> tuple[str, list[str], str, str] | None:
    """Indefinite integral of a monomial (demo); polynomials, trig, exp and definite (full)."""
    w = Writer(level)
    if level == "demo":
        k, n = rng.choice(DEMO_INTEGRAL["quotients"]), rng.choice(DEMO_INTEGRAL["powers"])
        a = k * (n + 1)
        shown = _monomial(a, n)
        body = [
            f"We are asked to evaluate the integral \\int {shown} dx.",
            w.step(1, "Use the power rule"),
            w.math(f"\\int {shown} dx = {a} \\cdot \\frac{{x^{n + 1}}}{{{n + 1}}} + C"),
            w.step(2, "Divide the coefficient"),
            w.math(quotient_fact(a, n + 1)),
            w.answer(f"{_monomial(k, n + 1)} + C"),
        ]
        question = rng.choice(("What is \\int {f} dx?", "Integrate {f} with respect to x."))
        return question.format(f=shown), body, f"integrate({a}*x**{n}, x)", f"integral:{a}x^{n}"
    kind = rng.choice(("poly", "poly", "cos", "exp", "definite", "definite"))
    if kind in ("poly", "definite"):
        coefs = [rng.randint(1, 9)] + [rng.randint(-9, 9) for _ in range(rng.randint(1, 3))]
        f = sum(c * x ** (len(coefs) - 1 - i) for i, c in enumerate(coefs))
    else:
        a, b = rng.choice([k for k in range(-9, 10) if k]), rng.randint(2, 6)
        f = a * sp.cos(b * x) if kind == "cos" else a * sp.exp(b * x)
    if kind == "definite":
        lo, hi = sorted(rng.sample(range(-3, 5), 2))
        value = sp.integrate(f, (x, lo, hi))
        question = f"Evaluate the definite integral $\\int_{{{lo}}}^{{{hi}}} ({_latex(f)})\\,dx$."
        antiderivative = sp.integrate(f, x)
        body = [
            f"We are asked to evaluate $\\int_{{{lo}}}^{{{hi}}} ({_latex(f)})\\,dx$.",
            w.step(1, "Find an antiderivative"),
            w.math(f"F(x) = {_latex(antiderivative)}"),
            w.step(2, "Evaluate F at the bounds"),
            w.math(f"F({hi}) - F({lo}) = {num(value)}"),
            w.answer(f"${num(value)}$"),
        ]
        return (
            question,
            body,
            f"integrate({sp.sstr(f)}, (x, {lo}, {hi}))",
            f"definite:{f}:{lo}:{hi}",
        )
    antiderivative = sp.integrate(f, x)
    question = rng.choice(("Find $\\int ({f})\\,dx$.", "What is the indefinite integral of ${f}$?"))
    body = [
        f"We are asked to evaluate the integral $\\int ({_latex(f)})\\,dx$.",
        w.step(1, "Integrate term by term" if kind == "poly" else "Reverse the chain rule"),
        w.math(f"\\int ({_latex(f)})\\,dx = {_latex(antiderivative)} + C"),
        w.answer(f"${_latex(antiderivative)} + C$"),
    ]
    return question.format(f=_latex(f)), body, f"integrate({sp.sstr(f)}, x)", f"integral:{f}"


def limit(rng: random.Random, level: Level) -> tuple[str, list[str], str, str] | None:
    """Removable singularities, sin(kx)/x, (e^{kx} - 1)/x and ratios of polynomials at infinity."""
    w = Writer(level)
    kind = rng.choice(("removable", "removable", "sin", "exp", "infinity"))
    point: sp.Expr
    if kind == "removable":
        a, b = rng.randint(-9, 9), rng.randint(-9, 9)
        if a == b:
            return None
        f, point = sp.expand((x - a) * (x - b)) / (x - a), sp.Integer(a)
        how = f"Factor the numerator and cancel $x {'-' if a >= 0 else '+'} {abs(a)}$"
    elif kind == "sin":
        k = rng.choice([k for k in range(-9, 10) if k not in (0, 1)])
        f, point, how = sp.sin(k * x) / x, sp.Integer(0), "Use $\\lim_{u\\to 0} \\sin(u)/u = 1$"
    elif kind == "exp":
        k = rng.choice([k for k in range(-9, 10) if k not in (0, 1)])
        f, point, how = (sp.exp(k * x) - 1) / x, sp.Integer(0), "Use $e^u \\approx 1 + u$ near 0"
    else:
        p, q = rng.randint(1, 9), rng.randint(1, 9)
        num_poly = p * x**2 + rng.randint(-9, 9) * x + rng.randint(-9, 9)
        den_poly = q * x**2 + rng.randint(-9, 9) * x + rng.randint(1, 9)
        f, point, how = num_poly / den_poly, sp.oo, "Divide numerator and denominator by $x^2$"
    value = sp.limit(f, x, point)
    target = "\\infty" if point == sp.oo else str(point)
    shown = _latex(f)
    body = [
        f"We are asked to find $\\lim_{{x \\to {target}}} {shown}$.",
        w.step(1, how),
        w.math(f"\\lim_{{x \\to {target}}} {shown} = {num(value)}"),
        w.answer(f"${num(value)}$"),
    ]
    question = f"Evaluate $\\lim_{{x \\to {target}}} {shown}$."
    return question, body, f"limit({sp.sstr(f)}, x, {sp.sstr(point)})", f"limit:{f}:{point}"


_SHAPES: dict[str, tuple[str, str, str]] = {
    # name: (question, formula in LaTeX, sympy formula over the symbols a, b)
    "rect_area": (
        "A rectangle is {a} cm long and {b} cm wide. What is its area in cm^2?",
        "A = l \\cdot w",
        "a*b",
    ),
    "rect_perimeter": (
        "A rectangle is {a} m long and {b} m wide. What is its perimeter in m?",
        "P = 2(l + w)",
        "2*(a + b)",
    ),
    "triangle_area": (
        "A triangle has base {a} and height {b}. What is its area?",
        "A = \\frac{1}{2} b h",
        "a*b/2",
    ),
    "circle_area": (
        "A circle has radius {a}. What is its area? Give the exact value.",
        "A = \\pi r^2",
        "pi*a**2",
    ),
    "circumference": (
        "What is the circumference of a circle with radius {a}? Give the exact value.",
        "C = 2 \\pi r",
        "2*pi*a",
    ),
    "sphere_volume": (
        "What is the volume of a sphere of radius {a}? Give the exact value.",
        "V = \\frac{4}{3} \\pi r^3",
        "Rational(4, 3)*pi*a**3",
    ),
    "cylinder_volume": (
        "A cylinder has radius {a} and height {b}. What is its volume (exact)?",
        "V = \\pi r^2 h",
        "pi*a**2*b",
    ),
    "cube_surface": (
        "What is the surface area of a cube with edge length {a}?",
        "S = 6s^2",
        "6*a**2",
    ),
    "hypotenuse": (
        "A right triangle has legs {a} and {b}. How long is its hypotenuse?",
        "c = \\sqrt{a^2 + b^2}",
        "sqrt(a**2 + b**2)",
    ),
}
_TRIPLES = ((3, 4), (5, 12), (8, 15), (7, 24), (6, 8), (9, 12), (20, 21), (9, 40), (12, 16))


def geometry(rng: random.Random, level: Level) -> tuple[str, list[str], str, str] | None:
    """Areas, perimeters and volumes with small integer sizes; exact answers in terms of pi."""
    w = Writer(level)
    name = rng.choice(sorted(_SHAPES))
    question, formula, expr = _SHAPES[name]
    a, b = (
        rng.choice(_TRIPLES) if name == "hypotenuse" else (rng.randint(2, 20), rng.randint(2, 20))
    )
    value = sp.sympify(expr, locals={"a": sp.Integer(a), "b": sp.Integer(b)})
    body = [
        f"We use the formula ${formula}$.",
        w.step(1, "Substitute the given lengths"),
        w.math(f"{formula} = {num(value)}"),
        w.answer(f"${num(value)}$"),
    ]
    question = question.format(a=a, b=b)
    return question, body, _geometry_check(expr, a, b), f"geometry:{question}"


def _geometry_check(expr: str, a: int, b: int) -> str:
    return f"({expr}).subs({{Symbol('a'): {a}, Symbol('b'): {b}}})"


def probability(rng: random.Random, level: Level) -> tuple[str, list[str], str, str] | None:
    """Dice, coins and urns; the answer is a reduced fraction."""
    w = Writer(level)
    kind = rng.choice(("die", "two_dice", "coins", "urn", "urn_two"))
    if kind == "die":
        k = rng.randint(1, 5)
        question = (
            "A fair six-sided die is rolled. "
            f"What is the probability of rolling a number greater than {k}?"
        )
        check, reason = f"Rational({6 - k}, 6)", f"{6 - k} of the 6 outcomes are greater than {k}."
    elif kind == "two_dice":
        s = rng.randint(2, 12)
        ways = sum(1 for i in range(1, 7) for j in range(1, 7) if i + j == s)
        question = f"Two fair dice are rolled. What is the probability that their sum is {s}?"
        check, reason = (
            f"Rational({ways}, 36)",
            f"{ways} of the 36 equally likely outcomes sum to {s}.",
        )
    elif kind == "coins":
        n, k = rng.randint(2, 8), rng.randint(0, 8)
        if k > n:
            return None
        heads = "head" if k == 1 else "heads"
        question = (
            f"A fair coin is flipped {n} times. "
            f"What is the probability of getting exactly {k} {heads}?"
        )
        check = f"binomial({n}, {k}) / 2**{n}"
        ways = sp.binomial(n, k)
        reason = f"$\\binom{{{n}}}{{{k}}} = {ways}$ of the $2^{{{n}}}$ flip sequences qualify."
    elif kind == "urn":
        r, b = rng.randint(1, 12), rng.randint(1, 12)
        question = (
            f"A bag holds {r} red and {b} blue marbles. One marble is drawn at random. "
            "What is the probability that it is red?"
        )
        check, reason = f"Rational({r}, {r + b})", f"{r} of the {r + b} marbles are red."
    else:
        r, b = rng.randint(2, 10), rng.randint(1, 10)
        question = (
            f"A bag holds {r} red and {b} blue marbles. Two marbles are drawn without "
            "replacement. What is the probability that both are red?"
        )
        check = f"Rational({r}, {r + b}) * Rational({r - 1}, {r + b - 1})"
        reason = f"$\\frac{{{r}}}{{{r + b}}} \\cdot \\frac{{{r - 1}}}{{{r + b - 1}}}$"
    value = sp.sympify(check)
    body = [
        reason,
        w.step(1, "Simplify the fraction"),
        w.math(f"P = {num(value)}"),
        w.answer(f"${num(value)}$"),
    ]
    return question, body, check, f"probability:{question}"


MAKERS: dict[Level, dict[str, Callable]] = {
    "demo": {"unrelated_derivative": derivative, "unrelated_integral": integral},
    "full": {
        "unrelated_derivative": derivative,
        "unrelated_integral": integral,
        "unrelated_limit": limit,
        "unrelated_geometry": geometry,
        "unrelated_probability": probability,
    },
}


def generate(
    level: Level,
    counts: dict[str, int],
    seed: int,
    *,
    exclude: frozenset[str] = frozenset(),
    distinct: bool = True,
) -> list[Problem]:
    """Problems per task (``counts``: task -> how many), deterministic for a seed.

    ``exclude``: keys never to produce; ``distinct=False`` lets a key repeat.
    """
    problems: list[Problem] = []
    w = Writer(level)
    for task, count in counts.items():
        make = MAKERS[level][task]
        rng = random.Random(f"{task}/{level}/{seed}")
        seen: set[str] = set()
        made_count, tries = 0, 0
        while made_count < count:
            tries += 1
            if tries > 200 * max(count, 50):
                raise RuntimeError(f"could not draw {count} distinct {task} problems ({level})")
            made = make(rng, level)
            if made is None or made[3] in exclude or (distinct and made[3] in seen):
                continue
            question, body, check, key = made
            seen.add(key)
            made_count += 1
            reference = _reference(check)
            problems.append(
                Problem(
                    id=f"{task}-{level}-{made_count - 1:04d}",
                    suite="unrelated_math",
                    task=task,
                    level=level,
                    question=question,
                    answer=reference,
                    solution=w.join(body),
                    key=key,
                    check=check,
                )
            )
    return problems


def _reference(check: str) -> str:
    """The reference answer in LaTeX, computed by sympy from the check expression."""
    value = sp.sympify(check, locals={"x": x})
    text = sp.latex(value) if value.free_symbols else num(value)
    indefinite = check.startswith("integrate(") and "(x, " not in check
    return f"{text} + C" if indefinite else text
