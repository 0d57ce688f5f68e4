"""Difference directions, and steering and ablation along them.

The direction of a layer is the mean of `h_corrupt - h_clean` over the same contexts: what the
fine-tune added to that layer's output. Steering adds `alpha * direction` to the clean model's
layer output at every position; ablation projects the direction out of the corrupted model's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


@torch.no_grad()
def direction_tokens(model: nn.Module, direction: Tensor, k: int = 10) -> list[int]:
    """The top-k tokens of a direction read through the logit lens (diffing-toolkit's
    activation-difference lens): what the direction, on its own, pushes the model to say."""
    from patchers.analysis.activations import lens_logits

    logits = lens_logits(model, direction[None])[0]
    return logits.topk(min(k, logits.shape[-1])).indices.tolist()
