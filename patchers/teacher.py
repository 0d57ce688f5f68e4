"""Teacher-forced CMAP: patch every position of a fixed continuation in one pass.

The fast screen over many prompts and sites. For a prompt and a continuation (say the corrupted
model's own response from the evals), one pass over `prompt + continuation[:-1]` gives, for
every step s, the three models' predictions of `continuation[s]` from the context
`prompt + continuation[:s]`, with the site patched at every position from the last prompt
token on. All targets of a prompt are patched rows of the same pass.

The attention of a patched row keeps the autoregressive semantics: in "transient" mode a patched
position attends to the clean keys and values of the earlier positions and to its own, exactly
what a KV-cached transient step sees, so the result equals `run_cmap`'s when the continuation is
the patched model's own output; in "persistent" mode it attends to the patched row's own
earlier positions, as `run_cmap(mode="persistent")` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import torch
from torch import Tensor

from patchers.attention import attention, causal_mask
from patchers.cmap import MODES, Mode, check_prompts
from patchers.errors import PatchError
from patchers.metrics import STEP_COLUMNS, step_metrics
from patchers.models import ModelPair
from patchers.sites import Target, resolve_targets
from patchers.stack import DualStack, Fork

LOGIT_ROWS = 8  # patched rows whose logits are materialised at once: [rows, steps, vocab]


def run_cmap_teacher_forced(
    pair: ModelPair,
    prompts_ids: Sequence[Sequence[int]],
    continuations_ids: Sequence[Sequence[int]],
    *,
    site: str = "resid_post",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    mode: Mode = "transient",
    max_batch: int = 64,
) -> pl.DataFrame:
    """Steps table as `run_cmap`'s, where `token_id` is the forced continuation token and
    `y_patch` the patched model's argmax at that step."""
    targets = resolve_targets(pair.clean.config, site, layers, heads)
    vocab = pair.clean.config.vocab_size
    prompts = check_prompts(prompts_ids, vocab)
    if len(continuations_ids) != len(prompts):
        raise PatchError(f"{len(prompts)} prompts but {len(continuations_ids)} continuations")
    continuations = check_prompts(continuations_ids, vocab) if prompts else []
    if mode not in MODES:
        raise PatchError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    stack = DualStack(pair)
    frames = []
    with torch.inference_mode():
        for prompt_id, (prompt, continuation) in enumerate(
            zip(prompts, continuations, strict=True)
        ):
            for first in range(0, len(targets), max_batch):
                chunk = targets[first : first + max_batch]
                records = _forced_pass(stack, site, chunk, prompt, continuation, mode)
                frames.append(_frame(records, prompt_id, site, chunk, continuation))
    order = ["prompt_id", "site", "layer", "head", "step", "token_id", *STEP_COLUMNS]
    return pl.concat(frames).select(order)


def _forced_pass(
    stack: DualStack,
    site: str,
    targets: list[Target],
    prompt: list[int],
    continuation: list[int],
    mode: Mode,
) -> dict[str, Tensor]:
    """One pass of rows [corrupt | clean | one patched row per target]; metrics [targets, steps]."""
    device = stack.device
    ids = torch.tensor([prompt + continuation[:-1]], device=device)
    length, start, n_steps = ids.shape[1], len(prompt) - 1, len(continuation)
    rope = stack.rope(torch.arange(length, device=device)[None])
    rope = tuple(r.expand(2 + len(targets), *r.shape[1:]) for r in rope)
    forks = _forks(site, targets, start, device, stack.n_layers)
    valid = torch.ones(1, length, dtype=torch.bool, device=device)
    masks = {w: causal_mask(valid, length, w) for w in {s.window for s in stack.layers}}
    own = torch.eye(length, dtype=torch.bool, device=device)[None, None]
    transient = mode == "transient"

    def attend(layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        spec = stack.layers[layer]
        mask = masks[spec.window]
        z = attention(q[:2], k[:2], v[:2], mask, spec.scaling)
        m = q.shape[0] - 2
        if m == 0:
            return z
        if transient:  # earlier positions: clean keys/values; the position itself: its own
            keys = torch.cat([k[1:2].expand(m, -1, -1, -1), k[2:]], dim=2)
            values = torch.cat([v[1:2].expand(m, -1, -1, -1), v[2:]], dim=2)
            patched = attention(
                q[2:], keys, values, torch.cat([mask & ~own, own], -1), spec.scaling
            )
        else:
            patched = attention(q[2:], k[2:], v[2:], mask, spec.scaling)
        return torch.cat([z, patched])

    x = stack.embed(ids.repeat(2, 1), 1)
    for layer in range(stack.n_layers):
        x = stack.layer(layer, x, 1, rope, attend, forks[layer])
    x = x[:, start:]  # the positions that predict the continuation
    base = stack.logits(x[:2], 1)
    parts = []
    for group in range(2, x.shape[0], LOGIT_ROWS):
        rows = x[group : group + LOGIT_ROWS]
        patch = stack.logits(rows, 0)  # [g, steps, vocab]; n=0: all rows are clean-weight rows
        g = rows.shape[0]
        metrics = step_metrics(
            base[0].repeat(g, 1), base[1].repeat(g, 1), patch.reshape(g * n_steps, -1)
        )
        parts.append({k: v.view(g, n_steps).cpu() for k, v in metrics.items()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _forks(
    site: str, targets: list[Target], start: int, device, n_layers: int
) -> list[Fork | None]:
    forks: list[Fork | None] = []
    for layer in range(n_layers):
        block = [t for t in targets if t.layer == layer]
        if not block:
            forks.append(None)
            continue
        src = torch.zeros(len(block), dtype=torch.long, device=device)
        heads = torch.tensor([t.head for t in block], device=device) if site == "head" else None
        forks.append(Fork(site, src, start=start, heads=heads))
    return forks


def _frame(
    records: dict[str, Tensor],
    prompt_id: int,
    site: str,
    targets: list[Target],
    continuation: list[int],
) -> pl.DataFrame:
    n_targets, n_steps = records["y_patch"].shape
    columns = {k: v.reshape(-1).numpy() for k, v in records.items()}
    return pl.DataFrame(
        {
            "prompt_id": [prompt_id] * (n_targets * n_steps),
            "site": [site] * (n_targets * n_steps),
            "layer": [t.layer for t in targets for _ in range(n_steps)],
            "head": pl.Series([t.head for t in targets for _ in range(n_steps)], dtype=pl.Int64),
            "step": list(range(n_steps)) * n_targets,
            "token_id": continuation * n_targets,
            **columns,
        }
    ).with_columns(pl.col("cts").fill_nan(None))
