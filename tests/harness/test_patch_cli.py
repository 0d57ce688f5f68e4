"""`harness patch`: the file contract that scripts and checks read."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest
from transformers import AutoTokenizer

from harness.config import PatchConfig, experiment_from
from harness.errors import ConfigError, HarnessError
from harness.patch import load_models, read_prompts, run_patch
from tasks.prompt_format import PromptFormat
from tests.conftest import save_tiny_qwen3

QUESTIONS = ["Solve for x: 2x + 3 = 7", "If 3a - 1 = 5 what is a?"]


@pytest.fixture(scope="module")
def corrupt_dir(tmp_path_factory, chat_tokenizer):
    return save_tiny_qwen3(tmp_path_factory.mktemp("k") / "model", chat_tokenizer, seed=1)


def test_writes_the_three_tables(tmp_path, tiny_model_dir, corrupt_dir):
    out = tmp_path / "patch"
    models = load_models(str(tiny_model_dir), str(corrupt_dir))
    run_patch(models, QUESTIONS, out, PatchConfig(layers=[0, 3]), PromptFormat(), 6)
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


def test_options_and_a_config_build_the_same_objects(tmp_path):
    """`harness patch CONFIG --set ...` and `--clean ... --layers ...` make one typed config."""
    config = tmp_path / "x.yaml"
    config.write_text(
        "name: x\nmodels: {clean: a/b, corrupt: c/d}\nprompt: {system_prompt: be brief}\n"
        "patch: {sites: [head], heads: [1], mode: persistent}\neval: {max_new_tokens: 64}\n"
    )
    from_file = experiment_from(config, ["patch.layers=[0,2]"], {"patch": {"dtype": "bfloat16"}})
    flags = {
        "models": {"clean": "a/b", "corrupt": "c/d"},
        "prompt": {"system_prompt": "be brief", "chat_template": None},
        "patch": {"sites": ["head"], "heads": ["1"], "mode": "persistent", "layers": ["0", "2"],
                  "dtype": "bfloat16"},
        "eval": {"max_new_tokens": 64},
    }  # fmt: skip
    from_flags = experiment_from(None, [], flags)
    assert from_file.patch == from_flags.patch
    assert from_file.prompt == from_flags.prompt
    assert from_flags.patch.layers == [0, 2] and from_flags.patch.heads == [1]
    assert from_file.patch.token_limit(from_file.eval.max_new_tokens) == 64
    with pytest.raises(ConfigError, match=r"patch\.mode: input should be"):
        experiment_from(config, [], {"patch": {"mode": "sticky"}})


def test_refuses_to_overwrite_a_foreign_directory(tmp_path, tiny_model_dir, corrupt_dir):
    (tmp_path / "notes.txt").write_text("mine")
    models = load_models(str(tiny_model_dir), str(corrupt_dir))
    with pytest.raises(HarnessError, match="not a patch output"):
        run_patch(models, QUESTIONS, tmp_path, PatchConfig(), PromptFormat(), 4)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--site", "resid_mid"],
            "error: patch.sites.0: input should be 'resid_pre', 'resid_post'",
        ),
        (["--layers", "7"], "error: patch.layers: 7 out of range: the model has 4 layers (0-3"),
        (["--site", "head", "--heads", "9"], "error: patch.heads: 9 out of range"),
        (
            ["--mode", "sticky"],
            "error: patch.mode: input should be 'transient' or 'persistent', got 'sticky'",
        ),
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


def test_the_screen_forces_the_responses_of_a_flagged_table(tmp_path, tiny_model_dir, corrupt_dir):
    """`harness screen`: CTS per forced token of each response, from a flagged.parquet."""
    flagged = tmp_path / "flagged.parquet"
    pl.DataFrame({"question": QUESTIONS, "corrupt_response": ["x = 7", "a is 2"]}).write_parquet(
        flagged
    )
    out = tmp_path / "screen"
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "screen", "--clean", str(tiny_model_dir),
         "--corrupt", str(corrupt_dir), "--prompts", str(flagged), "--out", str(out),
         "--set", "patch.layers=[1,2]", "--set", "patch.sites=[resid_post,head]",
         "--set", "patch.heads=[0]"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    steps = pl.read_parquet(out / "steps.parquet")
    prompts = pl.read_parquet(out / "prompts.parquet")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    forced = [tokenizer.encode(r, add_special_tokens=False) for r in ["x = 7", "a is 2"]]
    assert prompts["response_ids"].to_list() == forced
    for (prompt_id, _site, _layer), group in steps.group_by("prompt_id", "site", "layer"):
        assert group.sort("step")["token_id"].to_list() == forced[prompt_id]
    assert sorted(steps["site"].unique().to_list()) == ["head", "resid_post"]
    assert sorted(steps["layer"].unique().to_list()) == [1, 2]


def test_a_site_the_family_lacks_is_one_line_before_any_weights(tmp_path):
    """A family outside the site table is laid out from config.json on the meta device: OPT has
    no MLP module, so `mlp_out` is refused before a weight loads (no weights are even saved)."""
    from transformers import OPTConfig

    OPTConfig(
        vocab_size=97, hidden_size=32, ffn_dim=64, word_embed_proj_dim=32, num_hidden_layers=2,
        num_attention_heads=2,
    ).save_pretrained(tmp_path / "opt")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "patch", "--clean", str(tmp_path / "opt"),
         "--corrupt", str(tmp_path / "opt"), "--prompt", "x", "--site", "mlp_out",
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == [
        "error: models.clean: model_type 'opt' has no 'mlp_out' site (no module for it in its "
        "layers); it offers: resid_pre, resid_post, attn_out, head"
    ]
    assert not (tmp_path / "o").exists()
