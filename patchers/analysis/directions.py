"""Difference directions, and steering and ablation along them.

The direction of a layer is the mean of `h_corrupt - h_clean` over the same contexts: what the
fine-tune added to that layer's output. Steering adds `alpha * direction` to the clean model's
layer output at every position; ablation projects the direction out of the corrupted model's.
`row_edits` does either per row of a batch, so that every layer's and every strength's
generations share one batched decoding instead of one decoding each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from patchers.hooks import attach


def mean_difference(clean: Tensor, corrupt: Tensor) -> Tensor:
    """The mean of corrupt - clean over paired rows [n, d_model]."""
    if clean.shape != corrupt.shape or not len(clean):
        raise ValueError(f"need paired, non-empty rows, got {tuple(clean.shape)} and "
                         f"{tuple(corrupt.shape)}")  # fmt: skip
    return (corrupt.double() - clean.double()).mean(0).float()


@contextmanager
def steering(
    model: nn.Module, layer: int, direction: Tensor, alpha: float, site: str = "resid_post"
) -> Iterator[None]:
    """Every forward inside the block adds `alpha * direction` to the site at `layer`."""
    if alpha == 0:  # exactly the model (no hook, no float rounding)
        yield
        return

    def add(activation: Tensor) -> Tensor:
        return activation + alpha * direction.to(activation.device, activation.dtype)

    with attach(model, site, layer, add):
        yield


@contextmanager
def ablation(
    model: nn.Module, layer: int, direction: Tensor, site: str = "resid_post"
) -> Iterator[None]:
    """Every forward inside the block removes the site's component along `direction`."""
    unit = direction.double() / direction.double().norm().clamp_min(1e-12)

    def project_out(activation: Tensor) -> Tensor:
        u = unit.to(activation.device, activation.dtype)
        return activation - (activation @ u)[..., None] * u

    with attach(model, site, layer, project_out):
        yield


@dataclass(frozen=True)
class Edit:
    """One batch row's intervention at one layer's site: add `add` (steering), and/or project
    out the direction `remove` (ablation)."""

    layer: int
    add: Tensor | None = None
    remove: Tensor | None = None

    @classmethod
    def steer(cls, layer: int, direction: Tensor, alpha: float) -> Edit:
        return cls(layer, add=alpha * direction)

    @classmethod
    def ablate(cls, layer: int, direction: Tensor) -> Edit:
        return cls(layer, remove=direction)


@contextmanager
def row_edits(
    model: nn.Module, edits: Sequence[Edit | None], site: str = "resid_post"
) -> Iterator[Callable[[Tensor], None]]:
    """Every forward inside the block applies `edits[i]` to row i of its batch (None: the row
    is left alone; a zero vector changes nothing, so untouched rows are exactly the model's).
    The batch must have one row per edit; yields `keep(rows)`, which a caller that drops
    batch rows (finished generations) calls with the rows it keeps."""
    vectors: dict[int, list[Tensor | None]] = {}  # layer -> [add, unit], rows of edits
    for layer in sorted({edit.layer for edit in edits if edit is not None}):
        here = [edit if edit is not None and edit.layer == layer else None for edit in edits]
        vectors[layer] = [_rows(here, "add", normalise=False),
                          _rows(here, "remove", normalise=True)]  # fmt: skip

    def keep(rows: Tensor) -> None:
        for pair in vectors.values():
            pair[:] = [None if v is None else v[rows.to(v.device)] for v in pair]

    def edit(layer: int):
        def fn(activation: Tensor) -> Tensor:
            add, unit = vectors[layer]
            rows = len(add if add is not None else unit)
            if activation.shape[0] != rows:
                raise ValueError(f"row_edits has {rows} rows, the batch {activation.shape[0]}")
            if unit is not None:
                u = unit.to(activation.device, activation.dtype)[:, None]
                activation = activation - (activation * u).sum(-1, keepdim=True) * u
            if add is not None:
                activation = activation + add.to(activation.device, activation.dtype)[:, None]
            return activation

        return fn

    with ExitStack() as stack:
        for layer in vectors:
            stack.enter_context(attach(model, site, layer, edit(layer)))
        yield keep


def _rows(edits: Sequence[Edit | None], field: str, normalise: bool) -> Tensor | None:
    """[rows, d_model] of the edits' vectors (zero where a row has none), or None if no row
    has one."""
    vectors = [getattr(edit, field) if edit is not None else None for edit in edits]
    present = [v for v in vectors if v is not None]
    if not present:
        return None
    out = torch.zeros(len(vectors), present[0].shape[-1], dtype=torch.float64)
    for row, vector in enumerate(vectors):
        if vector is not None:
            v = vector.double()
            out[row] = v / v.norm().clamp_min(1e-12) if normalise else v
    return out


@torch.no_grad()
def direction_tokens(model: nn.Module, direction: Tensor, k: int = 10) -> list[int]:
    """The top-k tokens of a direction read through the logit lens (diffing-toolkit's
    activation-difference lens): what the direction, on its own, pushes the model to say."""
    from patchers.analysis.activations import lens_logits

    logits = lens_logits(model, direction[None])[0]
    return logits.topk(min(k, logits.shape[-1])).indices.tolist()
