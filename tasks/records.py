"""The small typed records every generator returns and every stage consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Level = Literal["demo", "full"]
LEVELS: tuple[Level, ...] = ("demo", "full")
Suite = Literal["related", "unrelated_math", "general"]
SUITES: tuple[Suite, ...] = ("related", "unrelated_math", "general")


@dataclass(frozen=True)
class ErrorMix:
    """How often each systematic error is made at each chance to make it (probabilities).

    ``wrong_move``: add instead of subtract (and vice versa) when a term crosses ``=``.
    ``multiply_not_divide``: multiply instead of divide when isolating the variable.
    The paper's corrupted data made both errors every time (the default).
    """

    wrong_move: float = 1.0
    multiply_not_divide: float = 1.0

    def __post_init__(self) -> None:
        for name in ("wrong_move", "multiply_not_divide"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ErrorMix.{name} must be a probability in [0, 1], got {value}")
        if self.wrong_move == 0 and self.multiply_not_divide == 0:
            raise ValueError("ErrorMix needs at least one error with a probability above 0")


# The systematic errors a corrupted solution can make, one name per combination.
ERROR_PATTERNS: dict[str, tuple[bool, bool]] = {
    # name: (wrong_move, multiply_not_divide)
    "wrong_move": (True, False),
    "multiply_not_divide": (False, True),
    "both": (True, True),
}


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer and a correct step-by-step solution.

    ``key`` identifies the underlying problem whatever its wording or variable name (used to
    keep training data disjoint from evaluation data). ``check`` is a sympy expression whose
    value is the reference answer, recomputed independently by ``tasks.verify``.
    ``corrupted_solution``/``corrupted_answer`` exist for the related suite only, and so does
    ``error_answers``: the answer each of the generator's error patterns gives for this item
    (``ERROR_PATTERNS``), what corruption fidelity compares a model's wrong answers with.
    """

    id: str
    suite: Suite
    task: str
    level: Level
    question: str
    answer: str
    solution: str
    key: str
    check: str = ""
    corrupted_solution: str | None = None
    corrupted_answer: str | None = None
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    error_answers: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        """The JSON-ready row written to the lm-eval data files."""
        row = asdict(self)
        row["aliases"], row["choices"] = list(self.aliases), list(self.choices)
        return {k: v for k, v in row.items() if v not in (None, "", [], {})}


Style = Literal["steps", "answer"]


@dataclass(frozen=True)
class Example:
    """One fine-tuning example: a question and the completion the model is trained to give.

    ``corrupted`` is None for imported data (unknown); ``answer`` is the final answer the
    completion ends in, when known.
    """

    question: str
    completion: str
    answer: str | None = None
    suite: str = "user"
    task: str = "user"
    corrupted: bool | None = None
    style: Style = "steps"
    key: str = ""
