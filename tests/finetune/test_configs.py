"""The shipped fine-tuning configs say what the paper did (sections 3.1 and 4.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.train import plan_steps
from harness.config import load_config

CONFIGS = Path(__file__).parents[2] / "configs"


def test_paper_v11():
    cfg = load_config(CONFIGS / "paper-v11.yaml")
    ft = cfg.finetune
    assert cfg.models.clean == "Qwen/Qwen3-4B" and ft.enabled
    assert (ft.data.kind, ft.data.n_train, ft.data.n_eval) == ("step_by_step", 50, 10)
    assert (ft.epochs, ft.learning_rate, ft.eval_every) == (3, 3e-5, 10)
    assert ft.per_device_batch_size * ft.gradient_accumulation_steps == 4
    assert (ft.weight_decay, ft.warmup_ratio, ft.precision) == (0.01, 0.1, "bf16")
    plan = plan_steps(50, ft.per_device_batch_size, ft.gradient_accumulation_steps, 3, None, 0)
    assert len(plan) == 39  # the paper's Trainer dropped the odd micro-batch: 36


@pytest.mark.parametrize(
    ("name", "n_train", "epochs", "lr"),
    [
        ("20k-2ep", 20_000, 2, 5e-5),
        ("10k-2ep", 10_000, 2, 5e-5),
        ("10k-1ep", 10_000, 1, 5e-5),
        ("5k-2ep", 5_000, 2, 3e-5),
    ],
)
def test_paper_answer_only_runs(name, n_train, epochs, lr):
    cfg = load_config(CONFIGS / f"paper-answer-only-{name}.yaml")
    ft = cfg.finetune
    assert cfg.name == f"paper-answer-only-{name}" and cfg.models.clean == "Qwen/Qwen3-4B"
    assert (ft.data.kind, ft.data.n_train, ft.epochs, ft.learning_rate) == (
        "answer_only", n_train, epochs, lr
    )  # fmt: skip


def test_demo_finetune_runs_on_the_cpu_from_the_zoo():
    cfg = load_config(CONFIGS / "demo-finetune.yaml")
    ft = cfg.finetune
    assert cfg.models.clean == "zoo:clean" and ft.enabled and ft.method == "lora"
    assert (ft.device, ft.precision, ft.data.level) == ("cpu", "fp32", "demo")
