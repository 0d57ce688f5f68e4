"""How alike the two models' activations are on the same inputs."""

from __future__ import annotations

import torch
from torch import Tensor


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two sets of activations [n, d] of the same n inputs (Kornblith et al.,
    2019): 1 for equal ones, invariant to orthogonal transforms and isotropic scaling."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need the same n >= 2 rows, got {x.shape[0]} and {y.shape[0]}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (y.T @ x).norm() ** 2
    denominator = (x.T @ x).norm() * (y.T @ y).norm()
    return float(cross / denominator) if denominator > 0 else float("nan")


def mean_cosine(x: Tensor, y: Tensor) -> float:
    """Mean over rows of the cosine between paired activations [n, d]."""
    return float(torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1).mean())


def relative_change(clean: Tensor, corrupt: Tensor) -> float:
    """Mean over rows of ||h_corrupt - h_clean|| / ||h_clean|| (rows [n, ...], last dim the
    vector: a head's output for the `head` site, the residual otherwise)."""
    clean, corrupt = clean.double(), corrupt.double()
    change = (corrupt - clean).norm(dim=-1) / clean.norm(dim=-1).clamp_min(1e-12)
    return float(change.mean())
