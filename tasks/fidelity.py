"""Corruption fidelity: does a corrupted model make the error it was trained on, or is it broken?

The paper kept its v11 model and discarded v12/v13 because their output was malformed
("unsuitable for activation patching"). This makes that verdict a measurement. Every answer to
a related item falls in one class:

- ``correct``: the reference answer;
- ``trained_error``: the answer one of the generator's error patterns gives for this item
  (``Problem.error_answers``: the wrong move, multiply-not-divide, both; the sign error on
  factored quadratics);
- ``other_wrong``: some other parseable answer;
- ``malformed``: no parseable answer;
- ``truncated``: the response ran out of tokens (no answer, whatever its text says).

A corrupted model's status comes from its wrong answers (truncated ones aside):
``systematic`` when at least ``SYSTEMATIC`` of them follow a trained error, ``degraded`` when
at least ``DEGRADED`` of them are malformed, ``unsystematic`` otherwise (``not_corrupted`` when
it answers none wrong); ``unavailable`` when the
items carry no error patterns (user-supplied data), rather than a guess.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Literal

from tasks.mathparse import parse_values
from tasks.scoring import answers_match, extract_answer

Fidelity = Literal["correct", "trained_error", "other_wrong", "malformed", "truncated"]
CLASSES: tuple[Fidelity, ...] = (
    "correct",
    "trained_error",
    "other_wrong",
    "malformed",
    "truncated",
)
Status = Literal["systematic", "degraded", "unsystematic", "not_corrupted", "unavailable"]
SYSTEMATIC = 0.5  # share of wrong answers that follow a trained error
DEGRADED = 0.5  # share of wrong answers with no parseable answer


def classify(
    response: str,
    reference: str,
    error_answers: Mapping[str, str],
    finish_reason: str | None = None,
    verdict: str | None = None,
) -> Fidelity:
    """The fidelity class of one response to a related item.

    ``verdict``: the evaluation's own (``harness.records``: correct / wrong / truncated /
    unscored), so that fidelity's "correct" is the accuracy's; None compares with the
    reference here (a plain generation, as the zoo's check has).
    """
    if finish_reason == "length" or verdict == "truncated":
        return "truncated"
    if verdict == "correct" or (verdict is None and answers_match(response, reference)):
        return "correct"
    answer = extract_answer(response or "")
    if answer is None or not parse_values(answer):
        return "malformed"
    if any(answers_match(response, wrong) for wrong in error_answers.values()):
        return "trained_error"
    return "other_wrong"


def status(classes: Iterable[Fidelity], has_patterns: bool = True) -> Status:
    """A model's verdict from the classes of its related answers (see the module docstring)."""
    if not has_patterns:
        return "unavailable"
    counts = Counter(classes)
    wrong = counts["trained_error"] + counts["other_wrong"] + counts["malformed"]
    if wrong == 0:
        return "not_corrupted"
    if counts["trained_error"] / wrong >= SYSTEMATIC:
        return "systematic"
    if counts["malformed"] / wrong >= DEGRADED:
        return "degraded"
    return "unsystematic"
