"""The related suite (the corrupted domain): linear and quadratic equations in one variable.

Each problem carries a correct step-by-step solution in the paper's style (appendix A) and a
corrupted one with the paper's systematic errors (see ``tasks.linear`` and ``tasks.quadratic``),
which always ends in a wrong answer.
"""

from __future__ import annotations

import random

from tasks.linear import linear
from tasks.quadratic import quadratic
from tasks.records import ErrorMix, Level, Problem

_MAX_TRIES = 200


MAKERS = {"related_linear": linear, "related_quadratic": quadratic}


def generate(
    level: Level,
    counts: dict[str, int],
    seed: int,
    mix: ErrorMix | None = None,
    *,
    exclude: frozenset[str] = frozenset(),
    distinct: bool = True,
) -> list[Problem]:
    """Related problems per task (``counts``: task -> how many), deterministic for a seed.

    ``exclude``: problem keys never to produce (the evaluation split, for training data);
    ``distinct=False`` lets a key repeat (training sets larger than the problem space).
    """
    mix = mix or ErrorMix()
    problems: list[Problem] = []
    for task, wanted in counts.items():
        make = MAKERS[task]
        rng = random.Random(f"{task}/{level}/{seed}")
        seen: set[str] = set()
        made, tries = 0, 0
        while made < wanted:
            tries += 1
            if tries > max(wanted, 50) * _MAX_TRIES:
                raise RuntimeError(
                    f"could not draw {wanted} {task} problems at level {level!r} "
                    f"(problem space exhausted, or the error mix {mix} cannot corrupt them)"
                )
            problem = make(rng, level, made, mix)
            if problem is None or problem.key in exclude or (distinct and problem.key in seen):
                continue
            seen.add(problem.key)
            problems.append(problem)
            made += 1
    return problems
