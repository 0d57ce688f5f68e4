"""The engine's growing cache layer holds exactly what transformers' DynamicLayer holds."""

from __future__ import annotations

import torch
from transformers import Gemma2Config, GPT2Config
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from patchers.cache import SPARE_COLUMNS, GrowingLayer, engine_cache


def _states(rows: int, columns: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(rows, 2, columns, 4, generator=generator),
        torch.randn(rows, 2, columns, 3, generator=generator),  # values may be narrower
    )


def test_growing_layer_equals_dynamic_layer_through_updates_selections_and_replacement():
    ours, theirs = GrowingLayer(), DynamicLayer()
    rows = 5
    for step, (columns, action) in enumerate(
        [(7, None), *[(1, None)] * (SPARE_COLUMNS + 10), (1, "select"), (1, "reorder"), (3, None)]
    ):
        if action == "select":
            keep = torch.tensor([4, 0, 0, 2])  # rows may repeat: a context's mirror
            ours.batch_select_indices(keep)
            theirs.batch_select_indices(keep)
            rows = len(keep)
        elif action == "reorder":  # something outside replaces the tensors
            order = torch.tensor([3, 1, 2, 0])
            ours.reorder_cache(order)
            theirs.reorder_cache(order)
        keys, values = _states(rows, columns, step)
        got, want = ours.update(keys, values), theirs.update(keys, values)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape
            assert torch.equal(a, b)
        assert ours.get_seq_length() == theirs.get_seq_length()
    assert ours.key_store.shape[2] > ours.get_seq_length()  # it kept spare columns
    # A write into the view (the engine's transient reset) lands in what the next step reads.
    ours.keys[1, :, -1] = 0.0
    keys, values = ours.update(*_states(rows, 1, 99))
    assert torch.equal(keys[1, :, -2], torch.zeros_like(keys[1, :, -2]))


def test_growing_layer_starts_over_after_reset():
    layer = GrowingLayer()
    layer.update(*_states(2, 3, 0))
    layer.reset()
    keys, _ = layer.update(*_states(2, 1, 1))
    assert keys.shape[2] == 1


def test_engine_cache_keeps_the_models_own_sliding_layers():
    gpt2 = engine_cache(GPT2Config(n_layer=3))
    assert [type(layer) for layer in gpt2.layers] == [GrowingLayer] * 3
    gemma = engine_cache(Gemma2Config(num_hidden_layers=4, sliding_window=16))
    kinds = [type(layer) for layer in gemma.layers]
    assert DynamicSlidingWindowLayer in kinds and GrowingLayer in kinds
