"""Writing numbers, polynomials and solution text in the paper's LaTeX style."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

from tasks.records import Level


def num(value: int | sp.Expr) -> str:
    """A number as LaTeX: ``-3``, ``\\frac{3}{4}``, ``-\\frac{16}{5}``, ``7 + \\sqrt{38}``.

    Integers are written directly: sympy's printer took most of the generators' time (the zoo
    draws tens of thousands of solutions), and writes an integer the same way."""
    if isinstance(value, int | sp.Integer) and not isinstance(value, bool):
        return str(int(value))
    return _latex_number(value)


@functools.lru_cache(maxsize=65536)
def _latex_number(value: sp.Expr) -> str:
    return sp.latex(sp.nsimplify(value))


def paren(value: int) -> str:
    """A factor that may be negative, bracketed when it is: ``3`` or ``(-3)``."""
    return f"({value})" if value < 0 else str(value)


def poly(coefficients: list[int], var: str) -> str:
    """``[2, -28, -11]`` -> ``2x^2 - 28x - 11`` (highest power first; zero terms dropped)."""
    degree = len(coefficients) - 1
    out = ""
    for index, coef in enumerate(coefficients):
        power = degree - index
        if coef == 0:
            continue
        body = {0: "", 1: var}.get(power, f"{var}^{power}")
        magnitude = abs(coef)
        text = body if magnitude == 1 and body else f"{magnitude}{body}"
        if not out:
            out = f"-{text}" if coef < 0 else text
        else:
            out += f" - {text}" if coef < 0 else f" + {text}"
    return out or "0"


def signed(coef: int, var: str = "") -> str:
    """A term to append: ``+ 3x``, ``- 3x``, ``+ 5``."""
    magnitude = abs(coef)
    text = var if magnitude == 1 and var else f"{magnitude}{var}"
    return f" - {text}" if coef < 0 else f" + {text}"


@dataclass(frozen=True)
class Writer:
    """Accumulates a solution in the paper's layout; ``demo`` is compact (single newlines)."""

    level: Level

    @property
    def sep(self) -> str:
        return "\n" if self.level == "demo" else "\n\n"

    def math(self, text: str) -> str:
        return f"$${text}$$"

    def inline(self, text: str) -> str:
        return text if self.level == "demo" else f"${text}$"

    def join(self, blocks: list[str]) -> str:
        return self.sep.join(blocks)

    def step(self, number: int, title: str) -> str:
        return f"**Step {number}:** {title}"

    def answer(self, text: str) -> str:
        return f"**Answer:** {text}"
