"""The committed lm-eval task folder equals a fresh regeneration."""

from __future__ import annotations

import json

from tasks.build import EVALS_DIR, render, stale_files


def test_committed_task_files_match_a_fresh_build() -> None:
    assert stale_files() == [], "run `python -m tasks.build` and commit tasks/evals"


def test_task_files_are_well_formed() -> None:
    files = render()
    for name in ("related.yaml", "unrelated_math.yaml", "general.yaml", "related_demo.yaml",
                 "unrelated_math_demo.yaml", "general_demo.yaml"):  # fmt: skip
        assert name in files
    assert '- "<|im_end|>"' in files["related_linear.yaml"]
    assert "do_sample: false" in files["related_linear_demo.yaml"]
    assert "output_type: multiple_choice" in files["general_mc.yaml"]
    for name, text in files.items():
        if name.endswith(".jsonl"):
            rows = [json.loads(line) for line in text.splitlines()]
            assert rows and all(r["question"] for r in rows), name
    assert (EVALS_DIR / "utils.py").is_file()
