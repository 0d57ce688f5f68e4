"""The sanity checks of every patch run: they pass on a sound pair and fail when sabotaged."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

import harness.patch as patch
from harness.config import ExperimentConfig
from harness.patch import checks_summary, encode_prompts, load_models, sanity_checks
from harness.pipeline.patching import run_patch_stage
from tests.conftest import save_tiny_qwen3
from tests.harness.test_report import write_canned_run

QUESTIONS = ["Solve for x: 2x + 3 = 7", "If 3a - 1 = 5 what is a?", "We are given"]
TOKENS = 12


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory, chat_tokenizer):
    """A clean model (peaked logits: no near-ties), a corrupted copy whose decoder layers moved
    (embeddings, final norm and head shared, as after a LoRA fine-tune), and a LoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("pair")
    clean = save_tiny_qwen3(root / "clean", chat_tokenizer, init=0.2)
    generator = torch.Generator().manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(clean)
    with torch.no_grad():
        for param in model.model.layers.parameters():
            if param.numel() > 1:
                param += 0.3 * param.std() * torch.randn(param.shape, generator=generator)
    model.save_pretrained(root / "corrupt")
    chat_tokenizer.save_pretrained(root / "corrupt")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(clean), lora)
    generator = torch.Generator().manual_seed(4)  # its greedy path has no near-tie argmaxes
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    adapted.save_pretrained(root / "adapter")
    return {"clean": str(clean), "corrupt": str(root / "corrupt"), "adapter": str(root / "adapter")}


def statuses(checks: pl.DataFrame) -> dict[str, str]:
    return {entry["check"]: entry["status"] for entry in checks_summary(checks)}


@pytest.mark.parametrize("corrupt", ["corrupt", "adapter"])
def test_the_checks_pass_on_a_sound_pair(pair_dirs, corrupt):
    models = load_models(pair_dirs["clean"], pair_dirs[corrupt])
    ids = encode_prompts(models, QUESTIONS)
    checks = sanity_checks(models, ids, TOKENS, identity=[("resid_post", 1, None), ("head", 2, 1)])
    assert statuses(checks) == dict.fromkeys(
        ("last_layer_tokens", "last_layer_generation", "identity"), "passed"
    )
    assert checks.height == 3 * 2 + 3 * 2  # two last-layer checks, two identity targets
    assert checks["passed"].all() and (checks["steps"] > 0).all()
    # the reference really is the corrupted model: it differs from the clean model's own
    assert patch.corrupt_greedy(models, ids, TOKENS) != patch.clean_greedy(models, ids, TOKENS)


def test_a_corrupted_reference_that_differs_fails(pair_dirs, monkeypatch):
    models = load_models(pair_dirs["clean"], pair_dirs["corrupt"])
    ids = encode_prompts(models, QUESTIONS)
    real = patch.corrupt_greedy

    def sabotaged(*args):
        out = real(*args)
        out[1] = [*out[1][:4], (out[1][4] + 1) % 50, *out[1][5:]]
        return out

    monkeypatch.setattr(patch, "corrupt_greedy", sabotaged)
    entries = {e["check"]: e for e in checks_summary(sanity_checks(models, ids, TOKENS))}
    failed = entries["last_layer_generation"]
    assert failed["status"] == "failed" and failed["failed"] == 1
    assert failed["first_failure"]["prompt_id"] == 1
    assert failed["first_failure"]["first_mismatch"] == 4
    assert entries["last_layer_tokens"]["status"] == "passed"
    assert patch.check_line(failed).startswith("CHECK FAILED: ")


def test_a_last_layer_patch_that_misses_y_corrupt_fails(pair_dirs, monkeypatch):
    models = load_models(pair_dirs["clean"], pair_dirs["corrupt"])
    ids = encode_prompts(models, QUESTIONS)
    real = patch.last_layer_run

    def sabotaged(*args, **kwargs):
        steps, texts = real(*args, **kwargs)
        off = (pl.col("prompt_id") == 2) & (pl.col("step") == 3)
        return steps.with_columns(
            y_corrupt=pl.when(off).then(pl.col("y_corrupt") + 1).otherwise("y_corrupt")
        ), texts

    monkeypatch.setattr(patch, "last_layer_run", sabotaged)
    entries = {e["check"]: e for e in checks_summary(sanity_checks(models, ids, TOKENS))}
    assert entries["last_layer_tokens"]["status"] == "failed"
    assert entries["last_layer_tokens"]["first_failure"]["first_mismatch"] == 3


def test_the_reference_check_can_run_on_some_prompts(pair_dirs, monkeypatch):
    models = load_models(pair_dirs["clean"], pair_dirs["corrupt"])
    seen = []
    real = patch.corrupt_greedy
    monkeypatch.setattr(
        patch, "corrupt_greedy", lambda m, ids, n: seen.append(ids) or real(m, ids, n)
    )
    ids = encode_prompts(models, QUESTIONS)
    checks = sanity_checks(models, ids, TOKENS, reference=[0, 2])
    generation = checks.filter(pl.col("check") == "last_layer_generation")
    assert generation["prompt_id"].to_list() == [0, 2] and generation["passed"].all()
    assert seen == [[ids[0], ids[2]]]
    assert checks.filter(pl.col("check") == "last_layer_tokens").height == 3  # every prompt


def test_an_identity_patch_that_changes_the_clean_model_fails(pair_dirs, monkeypatch):
    models = load_models(pair_dirs["clean"], pair_dirs["adapter"])
    ids = encode_prompts(models, QUESTIONS)
    monkeypatch.setattr(patch, "identity_pair", lambda pair: pair)  # the real corruption
    checks = sanity_checks(models, ids, TOKENS, identity=[("resid_post", 3, None)])
    assert statuses(checks)["identity"] == "failed"


def test_a_pair_with_another_head_is_not_checked_at_the_last_layer(
    pair_dirs, chat_tokenizer, tmp_path
):
    """Above the last layer the patched model runs the clean final norm and LM head: when the
    corrupted model's differ, that patch is not the corrupted model, so no failure is claimed."""
    other = save_tiny_qwen3(tmp_path / "other", chat_tokenizer, init=0.2, seed=5)
    models = load_models(pair_dirs["clean"], str(other))
    checks = sanity_checks(models, encode_prompts(models, QUESTIONS), TOKENS)
    entries = checks_summary(checks)
    assert {e["status"] for e in entries} == {"not_applicable"}
    assert "lm_head differs" in entries[0]["note"]


def stage_config(tmp_path, pair_dirs, **patch_settings) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "t",
            "output_dir": str(tmp_path),
            "models": {"clean": pair_dirs["clean"], "corrupt": pair_dirs["corrupt"]},
            "eval": {"level": "demo", "max_new_tokens": 8},
            "patch": {"layers": [0], "max_prompts_per_suite": 2, "max_controls_per_suite": 2}
            | patch_settings,
        }
    )


def test_a_failed_check_in_the_stage_is_loud_and_a_red_box(tmp_path, pair_dirs, monkeypatch):
    from harness.report import build_report

    run = write_canned_run(tmp_path, patched=False)
    cfg = stage_config(tmp_path, pair_dirs)
    said, alarms = [], []
    run_patch_stage(
        cfg,
        pair_dirs["clean"],
        pair_dirs["corrupt"],
        run / "eval",
        run / "patch",
        said.append,
        alarms.append,
    )
    assert alarms == [] and sum(line.startswith("check passed") for line in said) == 3
    assert json.loads((run / "patch" / "run.json").read_text())["checks"][0]["status"] == "passed"
    assert "class='box pass'" in build_report(run).html.read_text()

    monkeypatch.setattr(patch, "corrupt_greedy", lambda m, ids, n: [[1, 2, 3]] * len(ids))
    said.clear()
    info = run_patch_stage(
        cfg,
        pair_dirs["clean"],
        pair_dirs["corrupt"],
        run / "eval",
        run / "patch",
        said.append,
        alarms.append,
    )
    assert len(alarms) == 1 and alarms[0].startswith("CHECK FAILED: the patched generation")
    assert info["checks"]["last_layer_generation"] == "failed"
    built = build_report(run)
    assert "class='box alert'" in built.html.read_text()
    assert built.summary["checks_passed"] is False
    checks = pl.read_parquet(run / "patch" / "checks.parquet")
    assert checks.filter(pl.col("check") == "last_layer_generation")["passed"].not_().all()


def test_the_command_checks_itself(tmp_path, pair_dirs, monkeypatch):
    """`harness patch` runs the sanity checks of every patch run: passed on a true pair, a red
    CHECK FAILED line and exit 1 when the corrupted reference does not match."""
    from typer.testing import CliRunner

    import harness.patch
    from harness.cli import app

    args = ["patch", "--clean", pair_dirs["clean"], "--corrupt", pair_dirs["adapter"],
            "--prompt", "Solve for x: 2x + 3 = 7", "--layers", "0",
            "--max-new-tokens", "5"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    assert result.output.count("check passed") == 2
    checks = pl.read_parquet(tmp_path / "ok" / "checks.parquet")
    assert set(checks["check"]) == {"last_layer_tokens", "last_layer_generation"}
    assert checks["passed"].all()

    real = harness.patch.corrupt_greedy
    monkeypatch.setattr(
        harness.patch,
        "corrupt_greedy",
        lambda *a, **k: [[(ids[0] + 1) % 50, *ids[1:]] for ids in real(*a, **k)],
    )
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad")])
    assert result.exit_code == 1
    assert "CHECK FAILED" in result.output
