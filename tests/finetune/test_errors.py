"""Bad input gives one FinetuneError line naming the problem, before any time is spent."""

from __future__ import annotations

import json

import pytest
import torch

from finetune.config import FinetuneConfig
from finetune.errors import FinetuneError
from finetune.model import load_adapter
from finetune.run import finetune
from tasks.prompt_format import PromptFormat

FORMAT = PromptFormat()


def cfg(**overrides) -> FinetuneConfig:
    settings = {"max_steps": 2, "per_device_batch_size": 4, "device": "cpu"}
    return FinetuneConfig.model_validate({**settings, **overrides})


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(FinetuneError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_base, corrupted, correct):
    out = tmp_path_factory.mktemp("ckpt")
    finetune(cfg(save_every=1), tiny_base, FORMAT, corrupted, correct, out, progress=False)
    return out / "checkpoints" / "step-000001"


def test_missing_model_path(tmp_path, corrupted, correct):
    message = error_of(finetune, cfg(), tmp_path / "no-model", FORMAT, corrupted, correct, tmp_path)
    assert message.startswith(f"model path '{tmp_path / 'no-model'}' does not exist")


def test_directory_without_a_model(tmp_path, corrupted, correct):
    (tmp_path / "empty").mkdir()
    message = error_of(finetune, cfg(), tmp_path / "empty", FORMAT, corrupted, correct, tmp_path)
    assert message == f"{tmp_path / 'empty'}: no config.json, not a Hugging Face model directory"


def test_empty_training_data(tmp_path, tiny_base, correct):
    message = error_of(finetune, cfg(), tiny_base, FORMAT, [], correct, tmp_path)
    assert message.startswith("training data is empty")
    assert not (tmp_path / "adapter").exists()


def test_malformed_eval_data(tmp_path, tiny_base, corrupted):
    message = error_of(finetune, cfg(), tiny_base, FORMAT, corrupted, [("q", "")], tmp_path)
    assert message == "eval example 0: empty or missing answer"


def test_lora_targets_missing_from_the_model(tmp_path, tiny_base, corrupted, correct):
    bad = cfg(lora={"target_modules": ["q_proj", "c_attn"]})
    message = error_of(finetune, bad, tiny_base, FORMAT, corrupted, correct, tmp_path)
    assert message.startswith("LoRA target modules ['c_attn'] not found in the model")
    assert "q_proj" in message  # names what the model does have


def test_resume_on_another_base(tmp_path, make_base, checkpoint, corrupted, correct):
    other = make_base(tmp_path / "other", seed=1)
    resume = cfg(save_every=1, resume_from=str(checkpoint))
    message = error_of(finetune, resume, other, FORMAT, corrupted, correct, tmp_path / "out")
    assert message.startswith(f"checkpoint {checkpoint} was trained on")
    assert str(other.resolve()) in message


def test_resume_with_changed_settings(tmp_path, tiny_base, checkpoint, corrupted, correct):
    resume = cfg(save_every=1, learning_rate=1e-3, resume_from=str(checkpoint))
    message = error_of(finetune, resume, tiny_base, FORMAT, corrupted, correct, tmp_path)
    assert "settings changed since it was saved: learning_rate 3e-05 -> 0.001" in message


def test_resume_from_a_directory_that_is_no_checkpoint(tmp_path, tiny_base, corrupted, correct):
    resume = cfg(resume_from=str(tmp_path))
    message = error_of(finetune, resume, tiny_base, FORMAT, corrupted, correct, tmp_path)
    assert message.startswith(f"{tmp_path}: not a fine-tuning checkpoint")


def test_adapter_for_a_base_of_another_shape(tmp_path, make_base, checkpoint):
    from transformers import AutoModelForCausalLM

    wider = AutoModelForCausalLM.from_pretrained(make_base(tmp_path / "wide", hidden=128))
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    # even under the base name the adapter expects, a model of another width is refused
    message = error_of(load_adapter, wider, checkpoint, config["base_model_name_or_path"])
    assert message.startswith(f"adapter {checkpoint} does not fit the base")
    assert "size mismatch for" in message


def test_adapter_for_another_base_name(tmp_path, tiny_base, checkpoint):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    message = error_of(load_adapter, model, checkpoint, "Qwen/Qwen3-4B")
    assert message == (
        f"adapter {checkpoint} was trained on {str(tiny_base.resolve())!r}, "
        "not on the base 'Qwen/Qwen3-4B'"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_requested_without_a_gpu(tmp_path, tiny_base, corrupted, correct):
    message = error_of(
        finetune, cfg(device="cuda"), tiny_base, FORMAT, corrupted, correct, tmp_path
    )
    assert message.startswith("finetune.device is cuda but no CUDA GPU is visible")
