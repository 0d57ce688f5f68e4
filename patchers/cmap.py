"""Autoregressive cross-model activation patching (CMAP) with KV caches.

Semantics (the paper's "transient" patching, section 3.2): at every step the clean and corrupted
models see the same context, the trajectory's own; the clean model's activation at the site of
layer L, at the last position only, is replaced by the corrupted model's; the patched model's
argmax is appended to the context. Earlier positions are never patched.

How it is computed: every (prompt, target) pair is a trajectory, and a batch of trajectories
advances one token per step through one `DualStack` pass with rows `[corrupt R | clean R |
patched]`. The corrupted and clean rows run all layers (their logits give y_corrupt and y_clean,
their caches the next step's context); a patched row exists only from its layer L up, and its
keys and values at layer l are written into a mirror of its clean row's cache. In transient
mode the mirror's newest column is reset to the clean keys and values right after the
attention that used it, so the patched pass is discarded; in "persistent" mode (patched states
enter the cache) it stays. The prompt minus its last token is prefilled once per distinct
prompt. Finished trajectories leave the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl
import torch
from torch import Tensor

from patchers.attention import attention, causal_mask
from patchers.errors import PatchError
from patchers.metrics import STEP_COLUMNS, step_metrics
from patchers.models import ModelPair
from patchers.sites import Target, resolve_targets
from patchers.stack import DualStack, Fork

Mode = Literal["transient", "persistent"]
MODES = ("transient", "persistent")
GENERATION_SCHEMA = {
    "prompt_id": pl.Int64,
    "site": pl.String,
    "layer": pl.Int64,
    "head": pl.Int64,
    "token_ids": pl.List(pl.Int64),
    "stop": pl.String,
}


@dataclass(frozen=True)
class CmapResult:
    """`steps`: one row per trajectory and step (see `patchers.metrics` for the columns).
    `generations`: one row per trajectory with the patched model's `token_ids` and why it
    stopped (`"eos"` or `"length"`)."""

    steps: pl.DataFrame
    generations: pl.DataFrame


@dataclass(frozen=True)
class Trajectory:
    prompt_id: int
    target: Target


def run_cmap(
    pair: ModelPair,
    prompts_ids: Sequence[Sequence[int]],
    *,
    site: str = "resid_post",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    max_new_tokens: int = 128,
    eos_token_ids: Iterable[int] = (),
    mode: Mode = "transient",
    max_batch: int = 64,
) -> CmapResult:
    """Patch every requested layer (and head) of the corrupted model into the clean one while
    generating greedily from each prompt; `layers`/`heads` None means all. At most `max_batch`
    trajectories are decoded together."""
    targets = resolve_targets(pair.clean.config, site, layers, heads)
    prompts = check_prompts(prompts_ids, pair.clean.config.vocab_size)
    if mode not in MODES:
        raise PatchError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    if max_new_tokens < 1 or max_batch < 1:
        raise PatchError("max_new_tokens and max_batch must be at least 1")
    stack = DualStack(pair)
    trajectories = [Trajectory(p, t) for t in targets for p in range(len(prompts))]
    eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long, device=stack.device)
    steps, generations = [], []
    with torch.inference_mode():
        for start in range(0, len(trajectories), max_batch):
            chunk = trajectories[start : start + max_batch]
            decoder = _Decoder(stack, site, chunk, prompts, max_new_tokens, eos, mode)
            chunk_steps, chunk_tokens = decoder.run()
            steps.append(chunk_steps)
            generations += [
                _generation_row(traj, site, tokens, eos)
                for traj, tokens in zip(chunk, chunk_tokens, strict=True)
            ]
    generations_table = pl.DataFrame(generations, schema=GENERATION_SCHEMA)
    return CmapResult(steps=_steps_table(steps, site), generations=generations_table)


def check_prompts(prompts_ids: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    """Token-id prompts as lists; refuse empty input and ids outside the vocabulary."""
    prompts = [[int(i) for i in p] for p in prompts_ids]
    if not prompts:
        raise PatchError("no prompts given")
    for index, prompt in enumerate(prompts):
        if not prompt:
            raise PatchError(f"prompt {index} is empty")
        if min(prompt) < 0 or max(prompt) >= vocab_size:
            raise PatchError(
                f"prompt {index} has token ids outside the vocabulary (0..{vocab_size - 1})"
            )
    return prompts


class _Decoder:
    """Greedy CMAP decoding of one batch of trajectories, sorted by target."""

    def __init__(
        self,
        stack: DualStack,
        site: str,
        trajectories: list[Trajectory],
        prompts: list[list[int]],
        max_new_tokens: int,
        eos: Tensor,
        mode: Mode,
    ):
        self.stack, self.site, self.mode, self.eos = stack, site, mode, eos
        self.max_new_tokens = max_new_tokens
        self.trajectories = trajectories
        self.prompts = [prompts[t.prompt_id] for t in trajectories]
        self.width = max(len(p) for p in self.prompts)  # the padded prompt length
        self.capacity = self.width - 1 + max_new_tokens
        device = stack.device
        self.alive = torch.arange(len(trajectories), device=device)  # chunk index of each row
        self.tokens = torch.tensor([p[-1] for p in self.prompts], device=device)
        self.positions = torch.tensor([len(p) - 1 for p in self.prompts], device=device)
        self.windows = sorted({layer.window for layer in stack.layers}, key=lambda w: w or 0)
        self._layout()
        self._prefill()

    @property
    def rows(self) -> int:
        return self.alive.numel()

    def _layout(self) -> None:
        """Forks per layer and the number of mirrored rows each layer's cache holds."""
        targets = [self.trajectories[i].target for i in self.alive.tolist()]
        device = self.stack.device
        entry = [t.layer if self.site == "resid_pre" else t.layer + 1 for t in targets]
        self.mirrored = [sum(e <= layer for e in entry) for layer in range(self.stack.n_layers)]
        self.forks: list[Fork | None] = []
        for layer in range(self.stack.n_layers):
            block = [i for i, t in enumerate(targets) if t.layer == layer]
            if not block:
                self.forks.append(None)
                continue
            heads = None
            if self.site == "head":
                heads = torch.tensor([targets[i].head for i in block], device=device)
            src = torch.arange(block[0], block[-1] + 1, device=device)
            self.forks.append(Fork(self.site, src, heads=heads))

    def _prefill(self) -> None:
        """Run each distinct prompt minus its last token once per model; fill the caches."""
        stack, rows, length = self.stack, self.rows, self.width - 1
        device = stack.device
        distinct = sorted({tuple(p) for p in self.prompts})
        which = torch.tensor([distinct.index(tuple(p)) for p in self.prompts], device=device)
        pad = torch.tensor([self.width - len(p) for p in distinct], device=device)
        columns = torch.arange(self.capacity, device=device)
        valid = columns[None, :] >= pad[:, None]  # [U, capacity]
        self.valid = valid[which].repeat(3, 1)  # rows: corrupt | clean | mirror
        shape = (stack.n_kv, self.capacity, stack.head_dim)
        self.keys = [
            torch.zeros(2 * rows + m, *shape, dtype=stack.dtype, device=device)
            for m in self.mirrored
        ]
        self.values = [torch.zeros_like(k) for k in self.keys]
        if length == 0:
            return
        n = len(distinct)
        ids = torch.zeros(n, length, dtype=torch.long, device=device)
        for j, prompt in enumerate(distinct):
            ids[j, self.width - len(prompt) :] = torch.tensor(prompt[:-1], device=device)
        positions = (columns[None, :length] - pad[:, None]).clamp(min=0)
        rope = stack.rope(positions.repeat(2, 1))
        masks = {w: causal_mask(valid.repeat(2, 1), length, w) for w in self.windows}

        def attend(layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            m = self.mirrored[layer]
            for cache, new in ((self.keys[layer], k), (self.values[layer], v)):
                cache[:rows, :, :length] = new[:n][which]
                cache[rows : 2 * rows, :, :length] = new[n:][which]
                cache[2 * rows :, :, :length] = new[n:][which[:m]]
            spec = stack.layers[layer]
            return attention(q, k, v, masks[spec.window], spec.scaling)

        x = stack.embed(ids.repeat(2, 1), n)
        for layer in range(stack.n_layers):
            x = stack.layer(layer, x, n, rope, attend)

    def _step(self, column: int) -> dict[str, Tensor]:
        """Advance every row by one token at cache column `column`; the step's metrics."""
        stack, rows = self.stack, self.rows
        x = stack.embed(self.tokens.repeat(2)[:, None], rows)  # [2R, 1, d]
        rope = stack.rope(self.positions.repeat(3)[:, None])
        masks = {w: causal_mask(self.valid, 1, w, offset=column) for w in self.windows}
        transient = self.mode == "transient"

        def attend(layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            keys, values = self.keys[layer], self.values[layer]
            keys[:, :, column] = k[:, :, 0]
            values[:, :, column] = v[:, :, 0]
            spec = stack.layers[layer]
            z = attention(
                q,
                keys[:, :, : column + 1],
                values[:, :, : column + 1],
                masks[spec.window][: keys.shape[0]],
                spec.scaling,
            )
            m = self.mirrored[layer]
            if transient and m:  # the patched keys/values were for this pass only
                keys[2 * rows :, :, column] = keys[rows : rows + m, :, column]
                values[2 * rows :, :, column] = values[rows : rows + m, :, column]
            return z

        for layer in range(stack.n_layers):
            x = stack.layer(layer, x, rows, rope, attend, self.forks[layer])
        logits = stack.logits(x, rows)[:, 0]  # [3R, vocab]
        return step_metrics(logits[:rows], logits[rows : 2 * rows], logits[2 * rows :])

    def _drop(self, keep: Tensor) -> None:
        """Remove finished rows (keep: sorted row indices) from the state and the caches."""
        rows = self.rows
        old_mirrored = self.mirrored
        self.alive, self.tokens, self.positions = (
            self.alive[keep],
            self.tokens[keep],
            self.positions[keep],
        )
        self.valid = self.valid[torch.cat([keep, keep + rows, keep + 2 * rows])]
        self._layout()
        for layer, m in enumerate(old_mirrored):
            kept_mirror = keep[keep < m] + 2 * rows
            index = torch.cat([keep, keep + rows, kept_mirror])
            self.keys[layer] = self.keys[layer][index]
            self.values[layer] = self.values[layer][index]

    def run(self) -> tuple[dict[str, Tensor], list[list[int]]]:
        """Decode to the end; per-step metrics as flat tensors and each trajectory's tokens."""
        records: list[dict[str, Tensor]] = []
        tokens: list[list[int]] = [[] for _ in self.trajectories]
        for step in range(self.max_new_tokens):
            metrics = self._step(self.width - 1 + step)
            next_tokens = metrics["y_patch"]
            record = {k: v.cpu() for k, v in metrics.items()}
            record["row"] = self.alive.cpu()
            record["step"] = torch.full((self.rows,), step)
            records.append(record)
            for row, token in zip(record["row"].tolist(), record["y_patch"].tolist(), strict=True):
                tokens[row].append(token)
            finished = torch.isin(next_tokens, self.eos)
            if step + 1 == self.max_new_tokens or bool(finished.all()):
                break
            self.tokens = next_tokens
            self.positions = self.positions + 1
            if bool(finished.any()):
                self._drop((~finished).nonzero()[:, 0])
        flat = {k: torch.cat([r[k] for r in records]) for k in records[0]}
        flat["prompt_id"] = torch.tensor([t.prompt_id for t in self.trajectories])[flat["row"]]
        layers = torch.tensor([t.target.layer for t in self.trajectories])
        heads = torch.tensor(
            [-1 if t.target.head is None else t.target.head for t in self.trajectories]
        )
        flat["layer"], flat["head"] = layers[flat["row"]], heads[flat["row"]]
        return flat, tokens


def _steps_table(chunks: list[dict[str, Tensor]], site: str) -> pl.DataFrame:
    columns = {k: torch.cat([c[k] for c in chunks]).numpy() for k in chunks[0] if k != "row"}
    frame = pl.DataFrame(columns).with_columns(
        pl.lit(site).alias("site"),
        pl.when(pl.col("head") >= 0).then(pl.col("head")).cast(pl.Int64).alias("head"),
        pl.col("y_patch").alias("token_id"),
        pl.col("cts").fill_nan(None),
    )
    order = ["prompt_id", "site", "layer", "head", "step", "token_id"]
    order += [c for c in STEP_COLUMNS if c != "y_patch"]
    return frame.select(order).sort("prompt_id", "layer", "head", "step", nulls_last=True)


def _generation_row(traj: Trajectory, site: str, tokens: list[int], eos: Tensor) -> dict:
    stopped_by_eos = bool(tokens) and tokens[-1] in set(eos.tolist())
    return {
        "prompt_id": traj.prompt_id,
        "site": site,
        "layer": traj.target.layer,
        "head": traj.target.head,
        "token_ids": tokens,
        "stop": "eos" if stopped_by_eos else "length",
    }
