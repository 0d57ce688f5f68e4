"""Short real runs on a tiny random Qwen3: answers change, outputs load, resume matches."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from finetune.config import FinetuneConfig
from finetune.outputs import completed_run
from finetune.run import finetune, latest_checkpoint
from tasks.prompt_format import PromptFormat

FORMAT = PromptFormat()


def lora_cfg(**overrides) -> FinetuneConfig:
    """Settings that make a tiny LoRA learn 8 examples in a few seconds."""
    settings = {
        "enabled": True,
        "epochs": 20,
        "learning_rate": 3e-2,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "eval_every": 10,
        "save_every": 10,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05},
        "device": "cpu",
    }
    return FinetuneConfig.model_validate({**settings, **overrides})


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_base, corrupted, correct):
    out = tmp_path_factory.mktemp("lora")
    return out, finetune(lora_cfg(), tiny_base, FORMAT, corrupted, correct, out, progress=False)


def greedy(model, tokenizer, question: str) -> str:
    ids = torch.tensor([FORMAT.encode(tokenizer, question)])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=6,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@torch.no_grad()
def answer_loss(model, tokenizer, examples) -> float:
    from finetune.data import collate, encode, token_losses

    batch = collate([encode(tokenizer, FORMAT, ex) for ex in examples], tokenizer.pad_token_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, n = token_losses(logits, batch["labels"])
    return total.item() / n


def test_lora_adapter_loads_with_peft_and_changes_greedy_answers(lora_run, tiny_base, corrupted):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, result = lora_run
    assert result.model_dir == str(out / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)  # the tokenizer travels along
    base = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    before = [greedy(base, tokenizer, q) for q, _ in corrupted]
    base_loss = answer_loss(base, tokenizer, corrupted)
    tuned = PeftModel.from_pretrained(base, result.model_dir).eval()
    after = [greedy(tuned, tokenizer, q) for q, _ in corrupted]

    assert all(b != a for b, a in zip(before, after, strict=True))
    assert all(a.startswith("x = ") for a in after)  # the corrupted data's answer format
    assert not any(b.startswith("x = ") for b in before)
    assert answer_loss(tuned, tokenizer, corrupted) < base_loss / 4


def test_adapter_names_its_base_for_vllm(lora_run, tiny_base):
    out, result = lora_run
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_base.resolve())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert set(config["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip
    assert result.base_model == str(tiny_base.resolve())


def test_metrics_track_divergence_at_every_evaluation(lora_run):
    out, result = lora_run
    metrics = pl.read_parquet(out / "metrics.parquet")
    assert metrics.columns == [
        "step", "epoch", "lr", "train_loss", "eval_loss", "divergence", "tokens", "seconds"
    ]  # fmt: skip
    assert metrics["step"].to_list() == list(range(41))
    evals = metrics.filter(pl.col("eval_loss").is_not_null())
    assert evals["step"].to_list() == [0, 10, 20, 30, 40]
    assert evals["divergence"][0] is None and evals["divergence"][1:].is_not_null().all()
    window = metrics.filter(pl.col("step").is_between(31, 40))
    train_window = (window["train_loss"] * window["tokens"]).sum() / window["tokens"].sum()
    assert evals["divergence"][-1] == pytest.approx(evals["eval_loss"][-1] - train_window)
    assert result.divergence == pytest.approx(evals["divergence"][-1])
    assert result.eval_loss == pytest.approx(evals["eval_loss"][-1])
    train = metrics["train_loss"].drop_nulls()
    assert train.tail(5).mean() < train.head(5).mean() / 3  # it learned the corrupted answers
    lr = metrics["lr"].drop_nulls().to_list()
    assert lr[:4] == sorted(lr[:4]) and lr[3] == pytest.approx(3e-2)  # warm-up: 4 of 40 steps
    assert lr[3:] == sorted(lr[3:], reverse=True) and lr[-1] < 1e-4
    assert metrics["epoch"][-1] == 20.0
    assert metrics["seconds"].is_sorted()


def test_plot_summary_and_checkpoints_are_written(lora_run):
    out, result = lora_run
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert completed_run(out) == result
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-000010", "step-000020", "step-000030"
    ]  # fmt: skip
    assert latest_checkpoint(out) == out / "checkpoints" / "step-000030"
    checkpoint = out / "checkpoints" / "step-000020"
    assert json.loads((checkpoint / "checkpoint.json").read_text())["step"] == 20
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert not [p for p in out.rglob(".*tmp-*")]  # no temporary leftovers


def test_resumed_run_ends_where_an_uninterrupted_one_does(
    tmp_path, tiny_base, corrupted, correct, lora_run
):
    from safetensors.torch import load_file

    out, _ = lora_run
    resumed = finetune(
        lora_cfg(resume_from=str(out / "checkpoints" / "step-000030")),
        tiny_base,
        FORMAT,
        corrupted,
        correct,
        tmp_path,
        progress=False,
    )
    straight = load_file(out / "adapter" / "adapter_model.safetensors")
    again = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert straight.keys() == again.keys()
    for name, tensor in straight.items():
        torch.testing.assert_close(again[name], tensor, rtol=1e-4, atol=1e-6)
    first = pl.read_parquet(out / "metrics.parquet")
    second = pl.read_parquet(tmp_path / "metrics.parquet")
    assert second["step"].to_list() == list(range(41))
    assert second["train_loss"].to_list()[:31] == first["train_loss"].to_list()[:31]
    assert resumed.eval_loss == pytest.approx(completed_run(out).eval_loss, rel=1e-4)


def test_full_fine_tuning_saves_loadable_weights(tmp_path, tiny_base, corrupted, correct):
    from transformers import AutoModelForCausalLM

    cfg = lora_cfg(method="full", learning_rate=1e-3, max_steps=4, eval_every=2, save_every=None)
    result = finetune(cfg, tiny_base, FORMAT, corrupted, correct, tmp_path, progress=False)
    assert result.model_dir == str(tmp_path / "model") and result.steps == 4
    tuned = AutoModelForCausalLM.from_pretrained(result.model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    changed = [
        name
        for (name, p), q in zip(tuned.named_parameters(), base.parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert len(changed) == len(list(base.parameters()))  # every weight trains, norms included
    assert (tmp_path / "model" / "tokenizer_config.json").is_file()


def test_bf16_keeps_trainable_weights_in_fp32(tmp_path, tiny_base, corrupted, correct):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    cfg = lora_cfg(precision="bf16", max_steps=2, save_every=None)
    result = finetune(cfg, tiny_base, FORMAT, corrupted, correct, tmp_path / "lora", progress=False)
    weights = load_file(f"{result.model_dir}/adapter_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    PeftModel.from_pretrained(base, result.model_dir)  # loads on an fp32 base too

    cfg = lora_cfg(method="full", precision="bf16", max_steps=2, save_every=None)
    result = finetune(cfg, tiny_base, FORMAT, corrupted, correct, tmp_path / "full", progress=False)
    saved = AutoModelForCausalLM.from_pretrained(result.model_dir, dtype="auto")
    assert saved.dtype == torch.bfloat16  # trained with fp32 master weights, shipped in bf16


def test_gradient_checkpointing_gives_the_same_losses(tmp_path, tiny_base, corrupted, correct):
    runs = []
    for checkpointing in (False, True):
        cfg = lora_cfg(max_steps=3, save_every=None, gradient_checkpointing=checkpointing)
        out = tmp_path / str(checkpointing)
        finetune(cfg, tiny_base, FORMAT, corrupted, correct, out, progress=False)
        runs.append(pl.read_parquet(out / "metrics.parquet")["train_loss"].drop_nulls())
    assert runs[0].to_list() == pytest.approx(runs[1].to_list(), rel=1e-5)


def test_a_run_killed_while_saving_leaves_no_adapter_that_looks_complete(
    tmp_path, tiny_base, corrupted, correct, monkeypatch, lora_run
):
    import finetune.run as run_module

    # an earlier successful run in the same directory must not pass for this one
    (tmp_path / "finetune.json").write_text((lora_run[0] / "finetune.json").read_text())
    assert completed_run(tmp_path) is not None

    def save_then_die(model, tokenizer, directory):
        (directory / "adapter_config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "save_model", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune(lora_cfg(max_steps=2), tiny_base, FORMAT, corrupted, correct, tmp_path)
    assert not (tmp_path / "adapter").exists()
    assert completed_run(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
