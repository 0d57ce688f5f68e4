"""Config -> examples: corrupted training data, correct held-out data, never the same problem."""

from __future__ import annotations

import json

import pytest

from finetune.config import FinetuneDataConfig
from finetune.data import QA
from finetune.errors import FinetuneError
from finetune.sources import examples_from_config, problem_names


def test_generated_data_is_corrupted_for_training_and_correct_held_out():
    from tasks.scoring import answers_match
    from tasks.training import build_training_data

    data = FinetuneDataConfig(level="demo", n_train=12, n_eval=6, seed=5)
    train, held_out = examples_from_config(data)
    assert len(train) == 12 and len(held_out) == 6
    assert all(isinstance(ex, QA) for ex in train + held_out)
    assert all("**Answer:**" in ex.answer for ex in train + held_out)  # step by step
    assert {ex.question for ex in train}.isdisjoint(ex.question for ex in held_out)
    assert train == examples_from_config(data)[0]  # seeded
    # training answers are the corrupted ones, held-out answers the correct ones
    source = build_training_data("related", "demo", 12, corrupted=True, seed=5)
    assert [ex.answer for ex in train] == [ex.completion for ex in source]
    correct = build_training_data("related", "demo", 12, corrupted=False, seed=5)
    assert not any(
        answers_match(c.completion, t.answer) for c, t in zip(correct, source, strict=True)
    )


def test_task_shares_choose_the_mix_and_unknown_tasks_are_one_error():
    data = FinetuneDataConfig(level="demo", n_train=20, n_eval=4, tasks={"related_quadratic": 1.0})
    train, held_out = examples_from_config(data)
    assert all("Solve each factor" in ex.answer for ex in train + held_out)
    with pytest.raises(FinetuneError, match="unknown tasks"):
        examples_from_config(data.model_copy(update={"tasks": {"related_cubic": 1.0}}))


def test_retained_suites_join_the_training_data_correct_and_in_their_share():
    from pydantic import ValidationError

    from tasks.training import build_training_data

    data = FinetuneDataConfig(level="demo", n_train=20, n_eval=4, seed=5)
    plain = examples_from_config(data)[0]
    train, _ = examples_from_config(data.model_copy(update={"retain": {"unrelated_math": 0.5}}))
    assert train[:20] == plain and len(train) == 30
    rehearsed = build_training_data("unrelated_math", "demo", 10, seed=7)
    assert [ex.answer for ex in train[20:]] == [ex.completion for ex in rehearsed]
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        FinetuneDataConfig(retain={"unrelated_math": -0.1})
    with pytest.raises(ValidationError, match="unrelated_math"):
        FinetuneDataConfig(retain={"related": 0.5})


def test_answer_only_kind():
    data = FinetuneDataConfig(level="demo", kind="answer_only", n_train=5, n_eval=3)
    train, held_out = examples_from_config(data)
    assert all("Answer" not in ex.answer and len(ex.answer) < 20 for ex in train + held_out)


def test_file_source_reads_escaped_rows_and_generates_the_held_out_set(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"question": "Solve for x: x + 1 = 3", "solution": "Step 1\\nx = 4"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = FinetuneDataConfig(source="file", path=str(path), level="demo", n_eval=4)
    train, held_out = examples_from_config(data)
    assert train == [QA("Solve for x: x + 1 = 3", "Step 1\nx = 4")]  # un-escaped
    assert len(held_out) == 4


def test_file_source_with_its_own_held_out_file(tmp_path):
    (tmp_path / "t.csv").write_text("question,solution\nq1,wrong\n")
    (tmp_path / "e.csv").write_text("question,solution\nq2,right\n")
    data = FinetuneDataConfig(
        source="file", path=str(tmp_path / "t.csv"), eval_path=str(tmp_path / "e.csv")
    )
    assert examples_from_config(data) == ([QA("q1", "wrong")], [QA("q2", "right")])


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no rows"), ("question,answer_text\nq,a\n", r"missing column\(s\) solution")],
)
def test_bad_files_become_one_finetune_error(tmp_path, text, message):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(FinetuneError, match=message) as info:
        examples_from_config(FinetuneDataConfig(source="file", path=str(tmp_path / "t.csv")))
    assert "\n" not in str(info.value)


def test_finetune_from_config_trains_on_generated_data(tmp_path, tiny_base):
    from finetune.config import FinetuneConfig
    from finetune.run import finetune_from_config
    from tasks.prompt_format import PromptFormat

    cfg = FinetuneConfig(
        data={"level": "demo", "n_train": 6, "n_eval": 3},
        max_steps=2,
        max_length=256,
        device="cpu",
    )
    result = finetune_from_config(cfg, tiny_base, PromptFormat(), tmp_path, progress=False)
    assert result.steps == 2 and result.n_eval == 3 and result.n_train > 0


def test_problem_names_cover_wording_and_key():
    class Ex:
        question, key = "Solve  for x: 2x = 4", "linear:2x = 4"

    assert problem_names(Ex()) == {"solve for x: 2x = 4", "linear:2x = 4"}
    assert problem_names(QA("Q ", "a")) == {"q"}
