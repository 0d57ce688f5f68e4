"""What the related suite's generators share: wordings and the drawing of systematic errors."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tasks.records import ERROR_PATTERNS, ErrorMix

VARIABLES = ("x", "y", "z", "a", "b")
TEMPLATES = (
    "Solve for {v}: {eq}",
    "If {eq} what is {v}?",
    "Find {v} in the equation: {eq}",
)


@dataclass(frozen=True)
class Errors:
    """Which errors one corrupted solution makes."""

    move: bool
    multiply: bool


def draw_errors(rng: random.Random, mix: ErrorMix) -> Errors:
    """Draw the errors for one problem; at least one is always made."""
    while True:
        errors = Errors(rng.random() < mix.wrong_move, rng.random() < mix.multiply_not_divide)
        if errors.move or errors.multiply:
            return errors


def question(rng: random.Random, eq: str, v: str) -> str:
    return rng.choice(TEMPLATES).format(v=v, eq=eq)


def corrupt(
    rng: random.Random,
    mix: ErrorMix,
    truth: object,
    solve: Callable[[Errors], tuple[str, object] | None],
) -> tuple[str, object] | None:
    """A corrupted solution whose answer differs from ``truth`` (None if none can be drawn)."""
    for _ in range(8):
        result = solve(draw_errors(rng, mix))
        if result is not None and result[1] != truth:
            return result
    return None


def error_answers(
    truth: object,
    solve: Callable[[Errors], tuple[str, object] | None],
    show: Callable[[object], str],
) -> dict[str, str]:
    """The answer (as ``show`` writes it) of every error pattern that changes the answer."""
    answers = {}
    for name, (move, multiply) in ERROR_PATTERNS.items():
        result = solve(Errors(move, multiply))
        if result is not None and result[1] != truth:
            answers[name] = show(result[1])
    return answers
