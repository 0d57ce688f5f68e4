"""The KV cache the CMAP engine decodes with: the model's own cache, with room to grow.

`DynamicCache(config=...)` gives every layer the class the model asks for (sliding-window
layers keep only their window). Its full-attention layer (`DynamicLayer`) appends a step by
`torch.cat`, copying the whole cache at every token: over a 128-token generation that copying
was 15 % of the engine's time on the GPT-2 bench shape (`bench/cmap.py`), as much again as the
attention itself. `GrowingLayer` is that layer with spare columns: a step writes its new keys
and values in place, and the storage doubles when full, so a generation copies each column
about twice instead of once per later step. `keys` and `values` stay the prefix views the
model's attention reads, so everything else (masks, `get_seq_length`, row selection, crop)
works unchanged; where something replaces them with a tensor of its own, the next `update`
moves it into fresh storage.
"""

from __future__ import annotations

from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

SPARE_COLUMNS = 64  # the least room a new storage gets beyond what it holds


class GrowingLayer(DynamicLayer):
    """`DynamicLayer` whose keys and values are prefix views of storage with spare columns."""

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.key_store: Tensor | None = None
        self.value_store: Tensor | None = None

    def update(
        self, key_states: Tensor, value_states: Tensor, *args, **kwargs
    ) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        old = self.get_seq_length()
        new = old + key_states.shape[-2]
        if not self._in_store() or new > self.key_store.shape[-2]:
            self._move(key_states, value_states, capacity=max(2 * new, new + SPARE_COLUMNS))
        self.key_store[:, :, old:new] = key_states
        self.value_store[:, :, old:new] = value_states
        self.keys, self.values = self.key_store[:, :, :new], self.value_store[:, :, :new]
        return self.keys, self.values

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep rows `indices`: one gather of the storage, which stays a storage."""
        if self.get_seq_length() == 0:
            return
        if not self._in_store():
            return super().batch_select_indices(indices)
        length = self.get_seq_length()
        self.key_store, self.value_store = self.key_store[indices], self.value_store[indices]
        self.keys, self.values = self.key_store[:, :, :length], self.value_store[:, :, :length]

    def _in_store(self) -> bool:
        """Whether `keys`/`values` are still views of this layer's storage (nothing else
        replaced them) with as many rows."""
        store = self.key_store
        return (
            store is not None
            and self.keys.numel() > 0
            and self.keys.data_ptr() == store.data_ptr()
            and self.values.data_ptr() == self.value_store.data_ptr()
            and self.keys.shape[0] == store.shape[0]
        )

    def _move(self, key_states: Tensor, value_states: Tensor, capacity: int) -> None:
        """New storage of `capacity` columns holding the current keys and values."""
        length = self.get_seq_length()
        rows, heads, _, dim = key_states.shape
        key_store = key_states.new_empty(rows, heads, capacity, dim)
        value_store = value_states.new_empty(
            rows, value_states.shape[1], capacity, value_states.shape[-1]
        )
        if length:
            key_store[:, :, :length] = self.keys
            value_store[:, :, :length] = self.values
        self.key_store, self.value_store = key_store, value_store


def engine_cache(config) -> DynamicCache:
    """The model's own cache for `config` (its sliding-window layers where it has them), its
    full-attention layers growing in place."""
    cache = DynamicCache(config=config)
    cache.layers = [
        GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache
