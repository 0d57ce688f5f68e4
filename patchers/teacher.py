"""Teacher-forced CMAP: the decoding engine with a fixed continuation in place of the argmax.

The screen over many prompts and sites. For a prompt and a continuation (say the corrupted
model's own response from the evals), step s gives the three models' predictions of
`continuation[s]` from the context `prompt + continuation[:s]`, with the site patched from the
last prompt token on. Every target of a prompt shares the prompt's context for the whole
continuation, so a step costs one clean and one corrupted row per prompt plus one patched row
per target. In both modes the result equals `run_cmap`'s when the continuation is the patched
model's own output (the same engine, the same caches).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from patchers.cmap import Mode, _check_run, _Engine, check_prompts
from patchers.errors import PatchError
from patchers.models import ModelPair
from patchers.sites import Target, resolve_targets


def run_cmap_teacher_forced(
    pair: ModelPair,
    prompts_ids: Sequence[Sequence[int]],
    continuations_ids: Sequence[Sequence[int]],
    *,
    site: str = "resid_post",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    targets: Sequence[Target] | None = None,
    mode: Mode = "transient",
    max_batch: int = 64,
) -> pl.DataFrame:
    """Steps table as `run_cmap`'s, where `token_id` is the forced continuation token and
    `y_patch` the patched model's argmax at that step. `targets` patches those (layer, head)
    pairs alone instead of the grid of `layers` x `heads` (say the top heads of a screen)."""
    engine = _Engine(pair, site)
    if targets is not None:
        chosen = set(targets)
        layers = sorted({t.layer for t in chosen})
        heads = sorted({t.head for t in chosen if t.head is not None}) or None
    grid = resolve_targets(pair.clean.config, site, layers, heads, engine.layout)
    targets = grid if targets is None else [t for t in grid if t in chosen]
    vocab = pair.clean.config.vocab_size
    prompts = check_prompts(prompts_ids, vocab)
    if len(continuations_ids) != len(prompts):
        raise PatchError(f"{len(prompts)} prompts but {len(continuations_ids)} continuations")
    continuations = check_prompts(continuations_ids, vocab)
    _check_run(mode, 1, max_batch)
    engine.check_generic(prompts[0], mode)
    result = engine.run(targets, prompts, 1, (), mode, max_batch, forced=continuations)
    return result.steps
