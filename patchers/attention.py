"""Attention masks and the one attention call both engines use.

Masks are boolean (True = may attend) over cache columns. Prompts are left-padded, so within a
row column distances equal position distances and a sliding window is a column window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """Scaled dot-product attention with grouped key/value heads. q [rows, H, Tq, hd]."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )


def causal_mask(valid: Tensor, length: int, window: int | None, offset: int = 0) -> Tensor:
    """Mask for queries at columns offset..offset+length-1 over keys at columns 0..offset+length-1.

    valid [rows, >= offset+length] marks real (non-padding) columns. A padding query attends to
    itself so that no row of the softmax is empty. -> [rows, 1, length, offset+length]
    """
    keys = torch.arange(offset + length, device=valid.device)
    queries = keys[offset:, None]
    allowed = keys[None, :] <= queries
    if window is not None:
        allowed = allowed & (keys[None, :] > queries - window)
    mask = allowed[None] & valid[:, None, : offset + length]
    mask = mask | (keys[None, :] == queries)[None]
    return mask[:, None]
