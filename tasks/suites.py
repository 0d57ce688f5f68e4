"""The evaluation splits: which tasks make up each suite, how many items, and from which seed.

This is the single source of the held-out data: ``tasks.build`` writes it to the lm-eval data
files and ``tasks.training`` keeps training data away from it.
"""

from __future__ import annotations

import functools

from tasks import general, related, unrelated
from tasks.records import LEVELS, SUITES, Level, Problem, Suite

EVAL_SEED = 0

SIZES: dict[Level, dict[str, int]] = {
    # related/unrelated task -> held-out items (general: every fact in both wordings)
    "full": {
        "related_linear": 300,
        "related_quadratic": 300,
        "unrelated_derivative": 60,
        "unrelated_integral": 60,
        "unrelated_limit": 60,
        "unrelated_geometry": 60,
        "unrelated_probability": 60,
    },
    # demo problem spaces are small (about 2,700 linear equations, 760 factored quadratics):
    # the held-out share leaves most of each for training
    "demo": {
        "related_linear": 300,
        "related_quadratic": 200,
        "unrelated_derivative": 120,
        "unrelated_integral": 80,
    },
}
GENERAL_TASKS = ("general_facts", "general_mc", "general_open")


def task_name(task: str, level: Level) -> str:
    """The lm-eval task name: ``related_linear`` (full) or ``related_linear_demo`` (demo)."""
    return task if level == "full" else f"{task}_demo"


def group_name(suite: Suite, level: Level) -> str:
    """The lm-eval group name: ``related`` (full) or ``related_demo`` (demo)."""
    return suite if level == "full" else f"{suite}_demo"


def suite_tasks(suite: Suite, level: Level) -> tuple[str, ...]:
    """The generator task names that make up a suite at a level."""
    if suite == "general":
        return GENERAL_TASKS
    prefix = "related_" if suite == "related" else "unrelated_"
    return tuple(t for t in SIZES[level] if t.startswith(prefix))


@functools.cache
def _eval_split(level: Level) -> tuple[Problem, ...]:
    sizes = SIZES[level]
    rel = {t: n for t, n in sizes.items() if t.startswith("related_")}
    unrel = {t: n for t, n in sizes.items() if t.startswith("unrelated_")}
    short, choice = general.fact_problems(level)
    return (
        *related.generate(level, rel, EVAL_SEED),
        *unrelated.generate(level, unrel, EVAL_SEED),
        *short,
        *choice,
        *general.open_problems(level),
    )


def eval_problems(level: Level, suite: Suite | None = None) -> list[Problem]:
    """The held-out evaluation items of a level (one suite, or all), deterministic."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; known: {', '.join(LEVELS)}")
    if suite is not None and suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    return [p for p in _eval_split(level) if suite is None or p.suite == suite]


def eval_keys() -> frozenset[str]:
    """Problem keys of every evaluation split of every level."""
    return frozenset(p.key for level in LEVELS for p in eval_problems(level))


def eval_questions() -> frozenset[str]:
    """Normalised question texts of every evaluation split of every level."""
    return frozenset(normalize_question(p.question) for lv in LEVELS for p in eval_problems(lv))


def normalize_question(question: str) -> str:
    """Case and whitespace folded, for overlap checks."""
    return " ".join(question.lower().split())
