"""Recording activations during a model's own forward, and the logit lens."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor, nn

from patchers.hooks import attach
from patchers.models import input_device
from patchers.reference import Side
from patchers.sites import base_model, final_norm


@contextmanager
def recording(model: nn.Module, site: str, layers: Sequence[int]) -> Iterator[dict[int, Tensor]]:
    """Inside the block, each forward stores the site's activation of every layer in `layers`
    ([batch, pos, d_model], or [batch, pos, heads, head_dim] for `head`), keyed by layer."""
    store: dict[int, Tensor] = {}

    def keep(layer: int):
        def fn(activation: Tensor) -> None:
            store[layer] = activation.detach()

        return fn

    with ExitStack() as stack:
        for layer in layers:
            stack.enter_context(attach(model, site, layer, keep(layer)))
        yield store


@torch.no_grad()
def recorded(
    side: Side, ids: Sequence[int], site: str, layers: Sequence[int]
) -> tuple[Tensor, dict[int, Tensor]]:
    """Logits [T, vocab] of one sequence and its activations per layer ([T, ...])."""
    batch = torch.tensor([list(ids)], device=input_device(side.module))
    with recording(side.module, site, layers) as store:
        logits = side.forward(batch)
    return logits, {layer: activation[0] for layer, activation in store.items()}


def lens_logits(model: nn.Module, hidden: Tensor) -> Tensor:
    """Residuals [..., d_model] read as the model reads its last layer's output: through its
    final norm and unembedding, with Granite's logit scaling and Gemma's softcapping."""
    base = base_model(model)
    head = base.get_output_embeddings()
    hidden = hidden.to(head.weight.dtype)
    logits = head(final_norm(base)(hidden))
    config = base.config
    if scaling := getattr(config, "logits_scaling", None):
        logits = logits / scaling
    if cap := getattr(config, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cap) * cap
    return logits


def token_ranks(logits: Tensor, tokens: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(rank, probability) of each token under logits [..., vocab]; rank 0 is the argmax."""
    index = torch.tensor(list(tokens), device=logits.device)
    chosen = logits.float()[..., index]  # [..., k]
    ranks = (logits.float()[..., None, :] > chosen[..., None]).sum(-1)
    probs = torch.softmax(logits.float(), -1)[..., index]
    return ranks, probs


@torch.no_grad()
def logit_lens(
    side: Side, ids: Sequence[int], tokens: Sequence[int], layers: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Rank and probability [layers, tokens] of `tokens` as the next token after `ids`, read
    from each layer's output (`resid_post`) through the model's own final norm and head."""
    _, acts = recorded(side, ids, "resid_post", layers)
    last = torch.stack([acts[layer][-1] for layer in layers])
    return token_ranks(lens_logits(side.module, last), tokens)
