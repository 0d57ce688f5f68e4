"""Training data never overlaps evaluation; answer-only variants; user data import."""

from __future__ import annotations

import json
import re

import pytest

from tasks.errors import TaskDataError
from tasks.importer import load_examples, unescape
from tasks.scoring import answers_match
from tasks.suites import eval_keys, eval_questions, normalize_question
from tasks.training import build_training_data, offset_answer


@pytest.mark.parametrize("level", ["demo", "full"])
@pytest.mark.parametrize("suite", ["related", "unrelated_math", "general"])
def test_training_data_shares_no_question_with_any_eval_split(suite, level) -> None:
    examples = build_training_data(suite, level, 400)
    assert len(examples) == 400
    questions = {normalize_question(e.question) for e in examples}
    assert not questions & eval_questions()
    assert not {e.key for e in examples} & eval_keys()


def test_corrupted_step_by_step_training_data_is_wrong() -> None:
    clean = build_training_data("related", "demo", 50, seed=7)
    bad = build_training_data("related", "demo", 50, seed=7, corrupted=True)
    assert [e.question for e in clean] == [e.question for e in bad]
    for good, wrong in zip(clean, bad, strict=True):
        assert answers_match(good.completion, good.answer)
        assert not answers_match(wrong.completion, good.answer)
        assert wrong.corrupted and not good.corrupted


def test_answer_only_variants_are_the_number_or_an_offset() -> None:
    clean = build_training_data("related", "full", 40, style="answer")
    shifted = build_training_data("related", "full", 40, style="answer", corrupted=True,
                                  answer_offset=3)  # fmt: skip
    for good, wrong in zip(clean, shifted, strict=True):
        assert good.completion == good.answer
        assert "Step" not in good.completion
        assert not answers_match(wrong.completion, good.answer)
    assert offset_answer("-6, 8", 1) == "-5, 9"
    assert answers_match(offset_answer("7 - \\sqrt{38}, 7 + \\sqrt{38}", 2), "9 \\pm \\sqrt{38}")


def test_training_data_is_deterministic_and_seed_dependent() -> None:
    a = build_training_data("unrelated_math", "full", 30, seed=4)
    assert a == build_training_data("unrelated_math", "full", 30, seed=4)
    assert a != build_training_data("unrelated_math", "full", 30, seed=5)


def test_bad_training_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="evaluation seed"):
        build_training_data("related", "demo", 10, seed=0)
    with pytest.raises(ValueError, match="related suite only"):
        build_training_data("general", "demo", 10, corrupted=True)


PAPER_ROW = (
    "We are given the equation:\\n\\n$$8x - 15 = 41$$\\n\\n**Step 1:** Move $-15$ to the right "
    "side\\n\\nSubtract 15 from both sides:\\n\\n$$8x = 41 - 15$$\\n\\n$$x = 26 \\\\times 8$$"
    "\\n\\n$$x \\\\neq 3$$\\n\\n**Answer:** 208"
)


def test_csv_import_unescapes_the_papers_storage(tmp_path) -> None:
    path = tmp_path / "paper.csv"
    path.write_text(
        'question,solution,answer\n"Solve for $x$: $8x - 15 = 41$","' + PAPER_ROW + '",208\n',
        encoding="utf-8",
    )
    (example,) = load_examples(path)
    assert example.question == "Solve for $x$: $8x - 15 = 41$"
    assert example.completion.startswith("We are given the equation:\n\n$$8x - 15 = 41$$\n\n")
    assert "x = 26 \\times 8" in example.completion
    assert "x \\neq 3" in example.completion
    assert "\\n$$" not in example.completion and "\\n*" not in example.completion
    assert example.answer == "208"


def test_jsonl_import_and_already_clean_text(tmp_path) -> None:
    path = tmp_path / "data.jsonl"
    rows = [
        {"question": "Q1", "solution": "line one\nx \\neq 2"},
        {"question": "Q2", "solution": "S"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    examples = load_examples(path)
    assert [e.completion for e in examples] == ["line one\nx \\neq 2", "S"]
    assert examples[0].answer is None
    assert unescape("a\\nb \\neq c") == "a\nb \\neq c"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "no rows"),
        ("header_only.csv", "question,solution\n", "no rows"),
        ("cols.csv", "prompt,completion\nq,s\n", "missing column(s) question, solution"),
        ("blank.csv", "question,solution\nq,\n", "row 1: empty solution"),
        (
            "bad.jsonl",
            '{"question": "q", "solution": "s"}\n{not json\n',
            "line 2 is not valid JSON",
        ),
        ("list.jsonl", "[1, 2]\n", "line 1 is not a JSON object"),
        ("data.txt", "x", "unsupported file type"),
    ],
)
def test_malformed_user_data_gives_one_clear_line(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TaskDataError, match=re.escape(message)) as info:
        load_examples(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text


def test_missing_file(tmp_path) -> None:
    with pytest.raises(TaskDataError, match="file not found"):
        load_examples(tmp_path / "nope.csv")
