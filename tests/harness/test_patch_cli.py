"""`harness patch`: the file contract that scripts and checks read."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest
from transformers import AutoTokenizer

from harness.errors import HarnessError
from harness.patch import parse_indices, read_prompts, run_patch
from tasks.prompt_format import PromptFormat
from tests.conftest import save_tiny_qwen3

QUESTIONS = ["Solve for x: 2x + 3 = 7", "If 3a - 1 = 5 what is a?"]


@pytest.fixture(scope="module")
def corrupt_dir(tmp_path_factory, chat_tokenizer):
    return save_tiny_qwen3(tmp_path_factory.mktemp("k") / "model", chat_tokenizer, seed=1)


def test_writes_the_three_tables(tmp_path, tiny_model_dir, corrupt_dir):
    out = tmp_path / "patch"
    run_patch(str(tiny_model_dir), str(corrupt_dir), QUESTIONS, out, layers=[0, 3],
              max_new_tokens=6)  # fmt: skip
    prompts = pl.read_parquet(out / "prompts.parquet")
    steps = pl.read_parquet(out / "steps.parquet")
    texts = pl.read_parquet(out / "texts.parquet")

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected_ids = [PromptFormat().encode(tokenizer, q) for q in QUESTIONS]
    assert prompts["prompt"].to_list() == QUESTIONS
    assert prompts["prompt_ids"].to_list() == expected_ids

    required = ["prompt_id", "site", "layer", "head", "step", "token_id", "y_clean", "y_corrupt",
                "dl_patch", "dl_clean", "dl_corrupt", "cts", "kl_transfer"]  # fmt: skip
    assert set(required) <= set(steps.columns)
    assert sorted(steps["layer"].unique().to_list()) == [0, 3]
    undefined = steps.filter(pl.col("y_clean") == pl.col("y_corrupt"))
    assert undefined["cts"].null_count() == undefined.height  # null, never 0
    assert steps.filter(pl.col("y_clean") != pl.col("y_corrupt"))["cts"].null_count() == 0

    assert texts.height == len(QUESTIONS) * 2
    for row in texts.iter_rows(named=True):
        patched = (
            steps.filter(
                (pl.col("prompt_id") == row["prompt_id"]) & (pl.col("layer") == row["layer"])
            )
            .sort("step")["token_id"]
            .to_list()
        )
        assert row["token_ids"] == patched
        assert row["text"] == tokenizer.decode(patched, skip_special_tokens=True)
        assert row["n_tokens"] == len(patched)
        stopped = patched[-1] == tokenizer.eos_token_id
        assert row["finish_reason"] == ("stop" if stopped else "length")
        if not stopped:
            assert len(patched) == 6  # ran out of tokens


def test_prompts_from_a_flagged_table(tmp_path):
    path = tmp_path / "flagged.parquet"
    pl.DataFrame({"question": QUESTIONS, "suite": ["related"] * 2}).write_parquet(path)
    assert read_prompts(None, path) == QUESTIONS
    (tmp_path / "p.txt").write_text("a\n\nb\n")
    assert read_prompts(None, tmp_path / "p.txt") == ["a", "b"]
    with pytest.raises(HarnessError, match="exactly one"):
        read_prompts("a", path)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(HarnessError, match="no prompts"):
        read_prompts(None, tmp_path / "empty.txt")


def test_layer_lists():
    assert parse_indices("all", "layers") is None
    assert parse_indices("0, 3,5", "layers") == [0, 3, 5]
    with pytest.raises(HarnessError, match="comma-separated"):
        parse_indices("0-3", "layers")


def test_refuses_to_overwrite_a_foreign_directory(tmp_path, tiny_model_dir, corrupt_dir):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match="not a patch output"):
        run_patch(str(tiny_model_dir), str(corrupt_dir), QUESTIONS, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--site", "resid_mid"], "error: --site 'resid_mid': unknown site (known: resid_pre"),
        (["--layers", "7"], "error: --layers: 7 out of range: the model has 4 layers (0-3"),
    ],
)
def test_bad_input_is_one_line(tmp_path, tiny_model_dir, corrupt_dir, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "patch", "--clean", str(tiny_model_dir),
         "--corrupt", str(corrupt_dir), "--prompt", "x", "--out", str(tmp_path / "o"), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == [errors[0]] and errors[0].startswith(message)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
