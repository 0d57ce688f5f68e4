"""Fine-tuning and training data from the same generators, never overlapping evaluation.

Training problems come from a different seed and are filtered against the keys (the underlying
problem, whatever its wording) and the question texts of every evaluation split of every level.
The paper's validation set shared 19 of its 20 questions with its training set; this cannot.
"""

from __future__ import annotations

import random

import sympy as sp

from tasks import general, related, unrelated
from tasks.latex import num
from tasks.mathparse import parse_values
from tasks.records import ErrorMix, Example, Level, Problem, Style, Suite
from tasks.suites import (
    EVAL_SEED,
    SIZES,
    eval_keys,
    eval_questions,
    normalize_question,
    suite_tasks,
)

DEFAULT_SEED = 1


def build_training_data(
    suite: Suite,
    level: Level,
    count: int,
    *,
    corrupted: bool = False,
    style: Style = "steps",
    seed: int = DEFAULT_SEED,
    mix: ErrorMix | None = None,
    answer_offset: int = 1,
    tasks: dict[str, float] | None = None,
) -> list[Example]:
    """``count`` training examples of one suite, disjoint from every evaluation split.

    corrupted: the related suite's corrupted solutions (``style="steps"``) or answers shifted by
        ``answer_offset`` (``style="answer"``, the paper's answer-only experiments).
    style: ``"steps"`` (step-by-step solution) or ``"answer"`` (just the final answer).
    tasks: share of each generator task (default: equal shares of the suite's tasks).
    Problems may repeat when ``count`` exceeds the fresh problems a demo space holds; general
    facts are asked in their training wording, so each fact appears at most once per cycle.
    """
    if seed == EVAL_SEED:
        raise ValueError(f"seed {seed} is the evaluation seed; pick another")
    if count < 1:
        raise ValueError("count must be at least 1")
    if corrupted and suite != "related":
        raise ValueError("corrupted training data exists for the related suite only")
    if style not in ("steps", "answer"):
        raise ValueError(f"unknown style {style!r}; known: steps, answer")
    problems = _training_problems(suite, level, count, seed, mix, tasks)
    banned = eval_questions()
    examples = [
        _example(p, corrupted=corrupted, style=style, offset=answer_offset)
        for p in problems
        if normalize_question(p.question) not in banned
    ]
    random.Random(f"shuffle/{suite}/{level}/{seed}").shuffle(examples)
    return examples[:count]


def _training_problems(
    suite: Suite,
    level: Level,
    count: int,
    seed: int,
    mix: ErrorMix | None,
    shares: dict[str, float] | None,
) -> list[Problem]:
    if suite == "general":
        facts = general.training_facts(level)
        return [facts[i % len(facts)] for i in range(count)]
    names = [t for t in suite_tasks(suite, level) if t in SIZES[level]]
    shares = shares or {t: 1.0 for t in names}
    unknown = sorted(set(shares) - set(names))
    if unknown:
        raise ValueError(f"unknown tasks {unknown} for {suite}/{level}; known: {names}")
    total = sum(shares.values())
    counts = {t: round(count * w / total) for t, w in shares.items() if w > 0}
    counts[max(counts, key=counts.__getitem__)] += count - sum(counts.values())
    exclude = eval_keys()
    if suite == "related":
        return related.generate(level, counts, seed, mix, exclude=exclude, distinct=False)
    return unrelated.generate(level, counts, seed, exclude=exclude, distinct=False)


def offset_answer(answer: str, offset: int) -> str:
    """Every value of an answer shifted by ``offset`` ('-6, 8' -> '-5, 9')."""
    values = parse_values(answer)
    if not values:
        raise ValueError(f"cannot offset the answer {answer!r}")
    return ", ".join(num(sp.expand(v.expr + offset)) for v in values)


def _example(problem: Problem, *, corrupted: bool, style: Style, offset: int) -> Example:
    if style == "answer":
        answer = offset_answer(problem.answer, offset) if corrupted else problem.answer
        completion = answer
    elif corrupted:
        assert problem.corrupted_solution is not None and problem.corrupted_answer is not None
        answer, completion = problem.corrupted_answer, problem.corrupted_solution
    else:
        answer, completion = problem.answer, problem.solution
    return Example(
        question=problem.question,
        completion=completion,
        answer=answer,
        suite=problem.suite,
        task=problem.task,
        corrupted=corrupted,
        style=style,
        key=problem.key,
    )
