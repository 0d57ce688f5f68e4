"""The clean and corrupted models as one stack of decoder layers over rows of three kinds.

Every tensor the engines pass through the stack has rows `[corrupt n | clean n | patched m]`:
`n` corrupted rows, the `n` clean rows of the same contexts, then the patched rows that have
forked off so far. The corrupted rows use the corrupted weights (a second model, or the clean
base plus LoRA deltas: one copy of the base then serves all rows in one matmul); clean and
patched rows use the clean weights. A patched row is born at its target layer (a `Fork`) from
its clean row, with the activation at the site taken from its corrupted row, and exists only
above it, so the patched pass costs only the layers it needs.

The layer arithmetic is the Llama family's (Llama, Mistral, Qwen2, Qwen3: pre-norm RMSNorm,
rotary attention with optional q/k norms, gated MLP), calling the models' own modules and
weights; attention is left to the caller, who owns the KV caches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from torch import Tensor, nn

from patchers.models import ModelPair
from patchers.sites import sliding_window

# attend(layer, q [rows, H, T, hd], k [rows, KV, T, hd], v) -> z [rows, H, T, hd]
Attend = Callable[[int, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Fork:
    """Trajectories that become patched rows at one layer.

    `src[i]` is the index, among the n corrupted (and n clean) rows, of the context of the i-th
    forking trajectory; positions before `start` keep their clean values (teacher forcing patches
    only the continuation); `heads` names each trajectory's head for the `head` site.
    """

    site: str
    src: Tensor
    start: int = 0
    heads: Tensor | None = None


class _Linear:
    """One linear map of the pair: rows [:n] corrupted, the rest clean."""

    def __init__(self, clean: nn.Module, corrupt: nn.Module | None, adapter: str | None):
        base = clean.base_layer if isinstance(clean, LoraLinear) else clean
        self.weight, self.bias = base.weight, base.bias
        self.corrupt = None if corrupt is None else (corrupt.weight, corrupt.bias)
        self.lora = None
        if adapter is not None and isinstance(clean, LoraLinear) and adapter in clean.lora_A:
            self.lora = (clean.lora_A[adapter], clean.lora_B[adapter], clean.scaling[adapter])

    def __call__(self, x: Tensor, n: int) -> Tensor:
        if self.corrupt is not None:
            return torch.cat(
                [F.linear(x[:n], *self.corrupt), F.linear(x[n:], self.weight, self.bias)]
            )
        y = F.linear(x, self.weight, self.bias)
        if self.lora is not None and n:
            lora_a, lora_b, scaling = self.lora
            delta = lora_b(lora_a(x[:n].to(lora_a.weight.dtype))) * scaling
            y[:n] += delta.to(y.dtype)
        return y


class _Split:
    """A module applied by rows: the corrupted model's to rows [:n], the clean model's after."""

    def __init__(self, clean: nn.Module, corrupt: nn.Module | None):
        self.clean, self.corrupt = clean, corrupt

    def __call__(self, x: Tensor, n: int) -> Tensor:
        if self.corrupt is None:
            return self.clean(x)
        return torch.cat([self.corrupt(x[:n]), self.clean(x[n:])])


class _Layer:
    """The pieces of one decoder layer, paired."""

    def __init__(self, clean: nn.Module, corrupt: nn.Module | None, adapter: str | None, window):
        attn, mlp = clean.self_attn, clean.mlp
        k_attn = corrupt.self_attn if corrupt is not None else None
        k_mlp = corrupt.mlp if corrupt is not None else None

        def lin(owner, k_owner, name: str) -> _Linear:
            return _Linear(
                getattr(owner, name), getattr(k_owner, name) if k_owner else None, adapter
            )

        self.q, self.k, self.v, self.o = (lin(attn, k_attn, f"{p}_proj") for p in "qkvo")
        self.gate, self.up, self.down = (
            lin(mlp, k_mlp, f"{p}_proj") for p in ("gate", "up", "down")
        )
        self.act = mlp.act_fn
        self.norm1 = _Split(clean.input_layernorm, corrupt.input_layernorm if corrupt else None)
        self.norm2 = _Split(
            clean.post_attention_layernorm, corrupt.post_attention_layernorm if corrupt else None
        )
        has_qk_norm = hasattr(attn, "q_norm")
        self.q_norm = (
            _Split(attn.q_norm, k_attn.q_norm if k_attn else None) if has_qk_norm else None
        )
        self.k_norm = (
            _Split(attn.k_norm, k_attn.k_norm if k_attn else None) if has_qk_norm else None
        )
        self.scaling: float = attn.scaling
        self.window: int | None = window


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _splice(clean: Tensor, corrupt: Tensor, start: int) -> Tensor:
    """Clean rows with positions from `start` on taken from the corrupted rows. [b, T, ...]"""
    if start == 0:
        return corrupt
    out = clean.clone()
    out[:, start:] = corrupt[:, start:]
    return out


class DualStack:
    """The pair's embeddings, decoder layers and head over [corrupt | clean | patched] rows."""

    def __init__(self, pair: ModelPair):
        clean = pair.clean
        corrupt = None if isinstance(pair.corrupt, PeftModel) else pair.corrupt
        adapter = pair.adapter
        config = clean.config
        self.config = config
        self.n_layers: int = config.num_hidden_layers
        self.n_heads: int = config.num_attention_heads
        self.n_kv: int = config.num_key_value_heads
        first_attn = clean.model.layers[0].self_attn
        self.head_dim: int = first_attn.head_dim
        self.dtype = clean.model.embed_tokens.weight.dtype
        self.device = clean.model.embed_tokens.weight.device
        self.embed = _Split(
            clean.model.embed_tokens, corrupt.model.embed_tokens if corrupt else None
        )
        self.rotary = clean.model.rotary_emb
        self.layers = [
            _Layer(
                layer,
                corrupt.model.layers[i] if corrupt else None,
                adapter,
                sliding_window(config, i),
            )
            for i, layer in enumerate(clean.model.layers)
        ]
        self.norm = _Split(clean.model.norm, corrupt.model.norm if corrupt else None)
        self.lm_head = _Linear(clean.lm_head, corrupt.lm_head if corrupt else None, adapter)

    def rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos and sin for positions [rows, T]: [rows, 1, T, hd] each."""
        probe = torch.empty(0, dtype=self.dtype, device=self.device)
        cos, sin = self.rotary(probe, positions)
        return cos[:, None], sin[:, None]

    def logits(self, x: Tensor, n: int) -> Tensor:
        """Final norm and LM head. [rows, T, d] -> [rows, T, vocab]"""
        return self.lm_head(self.norm(x, n), n)

    def layer(
        self,
        index: int,
        x: Tensor,  # [rows, T, d]
        n: int,
        rope: tuple[Tensor, Tensor],  # for every row the stack may hold: [rows_max, 1, T, hd]
        attend: Attend,
        fork: Fork | None = None,
    ) -> Tensor:
        """One decoder layer; a fork appends the patched rows born at this layer."""
        layer = self.layers[index]
        site = fork.site if fork is not None else None
        if fork is not None:
            clean_src, corrupt_src = fork.src + n, fork.src
        if site == "resid_pre":
            x = torch.cat([x, _splice(x[clean_src], x[corrupt_src], fork.start)])
        rows, length, _ = x.shape
        h = layer.norm1(x, n)
        q = layer.q(h, n).view(rows, length, self.n_heads, self.head_dim)
        k = layer.k(h, n).view(rows, length, self.n_kv, self.head_dim)
        v = layer.v(h, n).view(rows, length, self.n_kv, self.head_dim).transpose(1, 2)
        if layer.q_norm is not None:
            q, k = layer.q_norm(q, n), layer.k_norm(k, n)
        cos, sin = rope[0][:rows], rope[1][:rows]
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        z = attend(index, q, k, v).transpose(1, 2)  # [rows, T, H, hd]
        if site == "head":
            chosen = F.one_hot(fork.heads, self.n_heads).bool()[:, None, :, None]
            if fork.start:
                chosen = (
                    chosen
                    & (torch.arange(length, device=x.device) >= fork.start)[None, :, None, None]
                )
            z = torch.cat([z, torch.where(chosen, z[corrupt_src], z[clean_src])])
            x = torch.cat([x, x[clean_src]])
        a = layer.o(z.reshape(z.shape[0], length, -1), n)
        mid = x + a
        if site == "attn_out":
            mid = torch.cat([mid, x[clean_src] + _splice(a[clean_src], a[corrupt_src], fork.start)])
        h = layer.norm2(mid, n)
        m = layer.down(layer.act(layer.gate(h, n)) * layer.up(h, n), n)
        post = mid + m
        if site == "mlp_out":
            post = torch.cat(
                [post, mid[clean_src] + _splice(m[clean_src], m[corrupt_src], fork.start)]
            )
        elif site == "resid_post":
            post = torch.cat([post, _splice(post[clean_src], post[corrupt_src], fork.start)])
        return post
