"""Autoregressive cross-model activation patching (CMAP) through the models' own forward.

Semantics (the paper's "transient" patching, section 3.2): at every step the clean and corrupted
models see the same context, the trajectory's own; the clean model's activation at the site of
layer L, at the last position only, is replaced by the corrupted model's; the patched model's
argmax is appended to the context. Earlier positions are never patched. In "persistent" mode the
patched states enter the patched row's cache (every position from the last prompt token on is
patched, as a full re-run patching all of them would).

How it is computed. Every (prompt, target) pair is a trajectory; a batch of them advances one
token per step, each step one KV-cached forward of the models' own code (their decoder layers,
attention, norms, MoE routing, rotary and cache classes), with the site read and written by
forward hooks (`patchers.hooks.attach`). The rows of a step:

- one corrupted and one clean row per *context*: a distinct token sequence that trajectories
  share. At first every target of a prompt shares the prompt's context; a context splits only
  when its trajectories' patched tokens differ (the paper saw y_clean == y_corrupt on 90-97 % of
  steps), so most steps need far fewer rows than trajectories. Their logits give y_corrupt and
  y_clean, their caches the contexts' keys and values;
- one patched row per trajectory: the clean model over a mirror of its context's clean cache,
  with the corrupted row's activation written at its layer's site. In transient mode the
  mirror's newest column is reset to the clean keys and values after each step, so the patched
  pass is discarded; in persistent mode it stays.

With a LoRA adapter as the corrupted model, one forward of the base model runs every row, each
LoRA linear map adding its delta (peft's own modules) to the corrupted rows alone, so one copy
of the base weights serves all of them; with a full corrupted model its rows run first and
hooks keep the site's activations for the clean forward to write. Teacher forcing is the same
engine with the continuation's tokens in place of the patched argmax.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import polars as pl
import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import Tensor

from patchers.cache import engine_cache
from patchers.errors import PatchError
from patchers.hooks import attach
from patchers.metrics import STEP_COLUMNS, step_metrics
from patchers.models import ModelPair, bare, input_device
from patchers.names import MAX_BATCH, MODES, Mode
from patchers.sites import (
    LAYOUTS,
    Layout,
    Target,
    decoder_layers,
    layout_for_config,
    layout_of,
    resolve_targets,
)

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
    stopped (`"eos"` or `"length"`). `rows`: the work done, summed over steps: `patched` rows
    (one per live trajectory) and `context` rows per model (one per distinct context); without
    sharing each model would have run `patched` rows."""

    steps: pl.DataFrame
    generations: pl.DataFrame
    rows: dict[str, int] = field(default_factory=dict)


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
    max_batch: int = MAX_BATCH,
    batches: range | None = None,
) -> CmapResult:
    """Patch every requested layer (and head) of the corrupted model into the clean one while
    generating greedily from each prompt; `layers`/`heads` None means all. At most `max_batch`
    trajectories are decoded together. `batches`: only those batches of the run (a shard;
    `cmap_batches` counts them); their results are the whole run's rows for them, row for row.
    A model outside the family table is first checked against the full-forward reference
    (`patchers.reference.self_test`)."""
    engine = _Engine(pair, site)
    targets = resolve_targets(pair.clean.config, site, layers, heads, engine.layout)
    prompts = check_prompts(prompts_ids, pair.clean.config.vocab_size)
    _check_run(mode, max_new_tokens, max_batch)
    engine.check_generic(prompts[0], mode)
    return engine.run(targets, prompts, max_new_tokens, eos_token_ids, mode, max_batch,
                      batches=batches)  # fmt: skip


def cmap_batches(
    config,
    n_prompts: int,
    *,
    site: str = "resid_post",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    max_batch: int = MAX_BATCH,
    trust_remote_code: bool = False,
) -> int:
    """How many batches of `max_batch` trajectories `run_cmap` decodes for `n_prompts` on the
    clean model of `config`: from the config alone, before (or without) any weights."""
    layout = layout_for_config(config, trust_remote_code)
    targets = resolve_targets(config, site, layers, heads, layout)
    return -(-n_prompts * len(targets) // max_batch)


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


def _check_run(mode: str, max_new_tokens: int, max_batch: int) -> None:
    if mode not in MODES:
        raise PatchError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    if max_new_tokens < 1 or max_batch < 1:
        raise PatchError("max_new_tokens and max_batch must be at least 1")


@dataclass
class _Plan:
    """The patched rows of the current step's clean forward, for the hooks.

    The forward's batch starts with `base` rows (the contexts' corrupted rows for shared pairs,
    then their clean rows); patched rows are appended after them, each at its target layer (at
    the layer's input, or at its output for `resid_post`), so a patched row costs only the
    layers above its target. `alive[l]` patched rows exist at the input of layer l: a prefix
    of the trajectories sorted by entry layer. `clean_rows[j]` is the base row of patched row
    j's clean context (its copy at birth; the index of its attention mask and rotary phases);
    `sources[j]` its context's corrupted row (shared pairs) or captured activation (full pairs).
    """

    base: int
    alive: list[int]  # per layer, and one more entry: the rows after the last layer
    clean_rows: Tensor
    sources: Tensor
    blocks: dict[int, tuple[int, int]]  # target layer -> its patched rows [start, end)
    heads: Tensor | None
    rows: Tensor  # every row of the expanded batch: the base row whose per-row inputs it takes
    expanded: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)  # see `_per_row`


class _Engine:
    """The pair, its layout and the hooks of one run; `_Decoder`s drive it step by step."""

    def __init__(self, pair: ModelPair, site: str):
        self.pair, self.site = pair, site
        self.layout: Layout = layout_of(pair.clean)
        self.n_layers = len(decoder_layers(pair.clean, self.layout))
        self.shared = pair.adapter is not None  # one forward of the base runs every row
        self.lora_rows = 0  # shared pairs: the leading rows of a forward that take the adapter
        self.device = input_device(pair.clean)
        self.vocab: int = pair.clean.config.vocab_size
        self.phase: Literal["corrupt", "clean"] | None = None  # which forward is running
        self.plan: _Plan | None = None
        self.captured: dict[int, Tensor] = {}

    def check_generic(self, prompt: list[int], mode: Mode) -> None:
        """A model outside the family table: the one-step self-test against the reference."""
        if self.pair.clean.config.model_type not in LAYOUTS:
            from patchers.reference import self_test

            self_test(self.pair, self.site, prompt, mode)

    def entry(self, target: Target) -> int:
        """The layer at whose input a target's patched row is born (n_layers: after the last)."""
        return target.layer + 1 if self.site == "resid_post" else target.layer

    def run(
        self,
        targets: list[Target],
        prompts: list[list[int]],
        max_new_tokens: int,
        eos_token_ids: Iterable[int],
        mode: Mode,
        max_batch: int,
        forced: list[list[int]] | None = None,
        batches: range | None = None,
    ) -> CmapResult:
        # Prompt-major, so that a batch holds every target of a prompt: they share its context.
        trajectories = [Trajectory(p, t) for p in range(len(prompts)) for t in targets]
        eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long, device=self.device)
        steps, generations = [], []
        rows = {"patched": 0, "context": 0}
        starts = range(0, len(trajectories), max_batch)
        with torch.inference_mode(), self.hooks({t.layer for t in targets}):
            for start in starts if batches is None else starts[batches.start : batches.stop]:
                chunk = trajectories[start : start + max_batch]
                decoder = _Decoder(self, chunk, prompts, max_new_tokens, eos, mode, forced)
                chunk_steps, chunk_tokens = decoder.run()
                steps.append(chunk_steps)
                rows = {k: rows[k] + decoder.rows[k] for k in rows}
                generations += [
                    _generation_row(traj, self.site, tokens, eos)
                    for traj, tokens in zip(chunk, chunk_tokens, strict=True)
                ]
        return CmapResult(
            steps=_steps_table(steps, self.site),
            generations=pl.DataFrame(generations, schema=GENERATION_SCHEMA),
            rows=rows,
        )

    @contextmanager
    def hooks(self, layers: set[int]) -> Iterator[None]:
        """On the clean model: every layer's pre-hook (births, per-row inputs for the patched
        rows) and the target layers' site hooks; on a full corrupted model, capture hooks."""
        clean, layout = self.pair.clean, self.layout
        with ExitStack() as stack:
            if self.shared:
                stack.enter_context(self._adapter_rows())
            for index, layer in enumerate(decoder_layers(clean, layout)):
                handle = layer.register_forward_pre_hook(self._enter(index), with_kwargs=True)
                stack.callback(handle.remove)
            for layer in sorted(layers):
                if not self.shared:
                    stack.enter_context(
                        attach(self.pair.corrupt, self.site, layer, self._capture(layer))
                    )
                if self.site != "resid_pre":  # resid_pre: born and written in `_enter`
                    fn = (
                        self._born_after(layer) if self.site == "resid_post" else self._write(layer)
                    )
                    stack.enter_context(attach(clean, self.site, layer, fn, layout))
            yield

    @contextmanager
    def _adapter_rows(self) -> Iterator[None]:
        """Shared pairs: the base model runs every row, and each LoRA layer adds its delta to the
        leading `lora_rows` rows only (the contexts' corrupted rows); peft's own adapter path is
        off meanwhile. The same arithmetic as peft's LoRA forward, without its per-row
        bookkeeping of a mixed-adapter batch."""
        name = self.pair.adapter
        with ExitStack() as stack:
            stack.enter_context(bare(self.pair.clean))
            for module in self.pair.clean.modules():
                if isinstance(module, LoraLinear) and name in module.lora_A:
                    handle = module.register_forward_hook(self._lora_delta(module, name))
                    stack.callback(handle.remove)
            yield

    def _lora_delta(self, module: LoraLinear, name: str):
        """`output[:rows] += scaling * B(A(x[:rows]))`, peft's eval-mode LoRA arithmetic (no
        dropout at inference), as two matmuls on the weights: a decoding step runs this in
        every adapted linear map, where module calls cost more than the tiny products."""
        a, b = module.lora_A[name].weight, module.lora_B[name].weight
        bias, scaling = module.lora_B[name].bias, module.scaling[name]

        def hook(_, args, output):
            rows = self.lora_rows
            if not rows:
                return None
            x = args[0][:rows]
            if x.dtype != a.dtype:
                x = x.to(a.dtype)
            delta = torch.matmul(torch.matmul(x, a.T), b.T)
            if bias is not None:  # peft's lora_bias
                delta = delta + bias
            if delta.dtype != output.dtype:
                delta = delta.to(output.dtype)
            output[:rows].add_(delta, alpha=scaling)
            return output

        return hook

    def _corrupt_value(self, layer: int, activation: Tensor, rows: slice) -> Tensor:
        """The corrupted last-position activation for patched rows `rows` of `layer`'s block."""
        plan = self.plan
        source = activation[:, -1] if self.shared else self.captured[layer]
        return source[plan.sources[rows].to(source.device)].to(activation.device)

    def _enter(self, index: int):
        """Layer `index`'s pre-hook: append the patched rows born here (copies of their clean
        rows; for `resid_pre` with the corrupted input at the last position), and give the
        patched rows their clean rows' per-row inputs (mask, rotary phases, positions)."""

        def hook(module, args, kwargs):
            plan = self.plan
            if self.phase != "clean" or plan is None or not plan.alive[index]:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            have, need = hidden.shape[0] - plan.base, plan.alive[index]
            if need > have:
                born = hidden[plan.clean_rows[have:need].to(hidden.device)].clone()
                if self.site == "resid_pre":
                    start, end = plan.blocks[index]
                    born[:, -1] = self._corrupt_value(index, hidden, slice(start, end))
                hidden = torch.cat([hidden, born])
            rows = plan.base + need
            args = tuple(_per_row(a, plan, rows) for a in args[1:])
            kwargs = {k: _per_row(v, plan, rows) for k, v in kwargs.items()}
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = hidden
                return args, kwargs
            return (hidden, *args), kwargs

        return hook

    def _born_after(self, layer: int):
        """`resid_post`: the patched rows of `layer` are born at its output, with the corrupted
        output at the last position."""

        def fn(hidden: Tensor) -> Tensor | None:
            plan = self.plan
            if self.phase != "clean" or plan is None or layer not in plan.blocks:
                return None
            start, end = plan.blocks[layer]
            born = hidden[plan.clean_rows[start:end].to(hidden.device)].clone()
            born[:, -1] = self._corrupt_value(layer, hidden, slice(start, end))
            return torch.cat([hidden, born])

        return fn

    def _capture(self, layer: int):
        def fn(activation: Tensor) -> None:
            if self.phase == "corrupt":
                self.captured[layer] = activation[:, -1].clone()

        return fn

    def _write(self, layer: int):
        """A site hook inside `layer`: its patched rows take the corrupted activation."""

        def fn(activation: Tensor) -> Tensor | None:
            plan = self.plan
            if self.phase != "clean" or plan is None or layer not in plan.blocks:
                return None
            start, end = plan.blocks[layer]
            rows = slice(plan.base + start, plan.base + end)
            value = self._corrupt_value(layer, activation, slice(start, end))
            new = activation.clone()
            if plan.heads is not None:  # [n, heads, head_dim]: one head per row
                old = new[rows, -1]
                chosen = torch.zeros(old.shape[:2], dtype=torch.bool, device=old.device)
                heads = plan.heads[start:end].to(old.device)
                chosen[torch.arange(end - start, device=old.device), heads] = True
                value = torch.where(chosen[..., None], value, old)
            new[rows, -1] = value
            return new

        return fn

    def forward(
        self, model, ids: Tensor, pads: Tensor, first_column: int, cache, lora_rows: int = 0
    ) -> tuple[Tensor, object]:
        """One forward of `model` over left-padded rows: last-position logits and the cache.
        Shared pairs: `model` is the base, and its first `lora_rows` rows take the adapter."""
        columns = first_column + ids.shape[1]
        column = torch.arange(columns, device=self.device)
        mask = (column[None] >= pads[:, None]).long()
        positions = (column[None, first_column:] - pads[:, None]).clamp(min=0)
        self.lora_rows = lora_rows
        try:
            with nullcontext() if self.shared else bare(model):
                out = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
        finally:
            self.lora_rows = 0
        return out.logits[:, -1], out.past_key_values


def _per_row(value, plan: _Plan, rows: int):
    """A layer input indexed for the first `rows` rows of the expanded batch: tensors (and
    tuples of them, like rotary cos/sin) whose first dimension is the forward's batch; anything
    else as it is. The model passes every layer the same mask and phases, so each is expanded
    once per forward (`plan.expanded`) and the layers take prefixes of it."""
    if isinstance(value, tuple):
        return tuple(_per_row(v, plan, rows) for v in value)
    if isinstance(value, Tensor) and value.dim() >= 2 and value.shape[0] == plan.base:
        seen = plan.expanded.get(id(value))
        if seen is None or seen[0] is not value:
            seen = plan.expanded[id(value)] = (value, value[plan.rows.to(value.device)])
        return seen[1][:rows]
    return value


class _Decoder:
    """Greedy (or forced) CMAP decoding of one batch of trajectories."""

    def __init__(
        self,
        engine: _Engine,
        trajectories: list[Trajectory],
        prompts: list[list[int]],
        max_new_tokens: int,
        eos: Tensor,
        mode: Mode,
        forced: list[list[int]] | None,
    ):
        self.engine, self.mode, self.eos = engine, mode, eos
        # Sorted by entry layer: the patched rows alive at a layer are a prefix of them.
        self.trajectories = sorted(trajectories, key=lambda t: engine.entry(t.target))
        self.order = [trajectories.index(t) for t in self.trajectories]
        trajectories = self.trajectories
        device = engine.device
        own = [prompts[t.prompt_id] for t in trajectories]
        distinct = sorted({tuple(p) for p in own})
        self.width = max(len(p) for p in distinct)  # the padded prompt length
        self.ctx_of = torch.tensor([distinct.index(tuple(p)) for p in own], device=device)
        self.ctx_pad = torch.tensor([self.width - len(p) for p in distinct], device=device)
        self.ctx_token = torch.tensor([p[-1] for p in distinct], device=device)
        self.alive = torch.arange(len(trajectories), device=device)  # index of each row
        self.layer = torch.tensor([t.target.layer for t in trajectories], device=device)
        self.entry = torch.tensor([engine.entry(t.target) for t in trajectories], device=device)
        self.head = torch.tensor(
            [-1 if t.target.head is None else t.target.head for t in trajectories], device=device
        )
        self.forced = None
        if forced is not None:
            lengths = [len(forced[t.prompt_id]) for t in trajectories]
            self.steps_left = torch.tensor(lengths, device=device)
            self.forced = torch.zeros(len(trajectories), max(lengths), dtype=torch.long)
            for i, t in enumerate(trajectories):
                self.forced[i, : lengths[i]] = torch.tensor(forced[t.prompt_id])
            self.forced = self.forced.to(device)
            max_new_tokens = max(lengths)
        self.max_new_tokens = max_new_tokens
        self.rows = {"patched": 0, "context": 0}
        self.clean_cache = engine_cache(engine.pair.clean.config)
        self.corrupt_cache = None if engine.shared else engine_cache(engine.pair.corrupt.config)
        self._prefill(distinct)

    @property
    def n_contexts(self) -> int:
        return self.ctx_token.numel()

    @property
    def base(self) -> int:
        """Rows of the clean forward before the patched ones: [corrupt |] clean contexts."""
        return 2 * self.n_contexts if self.engine.shared else self.n_contexts

    @property
    def clean_offset(self) -> int:
        return self.n_contexts if self.engine.shared else 0

    def mirrored(self) -> list[int]:
        """Patched rows alive at each layer's input (and after the last layer): a prefix of
        the live trajectories, which stay sorted by entry layer."""
        layers = torch.arange(self.engine.n_layers + 1, device=self.entry.device)
        return torch.searchsorted(self.entry[self.alive], layers, right=True).tolist()

    def _prefill(self, distinct: list[tuple[int, ...]]) -> None:
        """Run each distinct prompt minus its last token once per model; mirror the clean rows
        into the caches of the layers each patched row reaches."""
        engine, n = self.engine, len(distinct)
        length = self.width - 1
        if length == 0:
            return
        ids = torch.zeros(n, length, dtype=torch.long, device=engine.device)
        for j, prompt in enumerate(distinct):
            ids[j, self.width - len(prompt) :] = torch.tensor(prompt[:-1])
        if engine.shared:
            pads = self.ctx_pad.repeat(2)
            model = engine.pair.clean
            _, cache = engine.forward(model, ids.repeat(2, 1), pads, 0, self.clean_cache, n)
        else:
            engine.forward(engine.pair.corrupt, ids, self.ctx_pad, 0, self.corrupt_cache)
            _, cache = engine.forward(engine.pair.clean, ids, self.ctx_pad, 0, self.clean_cache)
        base = torch.arange(self.base, device=engine.device)
        clean_rows = self.clean_offset + self.ctx_of
        for layer, m in zip(cache.layers, self.mirrored(), strict=False):
            _select_rows(layer, torch.cat([base, clean_rows[:m]]))
        self.clean_cache = cache

    def _plan(self) -> None:
        """Tell the hooks which patched rows this step's clean forward holds, and where."""
        layer = self.layer[self.alive]
        blocks = {}
        for target in torch.unique(layer).tolist():
            members = (layer == target).nonzero()[:, 0]
            blocks[target] = (int(members[0]), int(members[-1]) + 1)
        heads = self.head[self.alive] if self.engine.site == "head" else None
        self.per_layer = self.mirrored()  # this step's; the reset and `_advance` reuse it
        clean_rows = self.clean_offset + self.ctx_of
        base = torch.arange(self.base, device=clean_rows.device)
        self.engine.plan = _Plan(
            base=self.base,
            alive=self.per_layer,
            clean_rows=clean_rows,
            sources=self.ctx_of,
            blocks=blocks,
            heads=heads,
            rows=torch.cat([base, clean_rows]),
        )

    def _step(self, column: int) -> dict[str, Tensor]:
        """Advance every row by one token at cache column `column`; the step's metrics."""
        engine, n = self.engine, self.n_contexts
        tokens, pads = self.ctx_token[:, None], self.ctx_pad
        self._plan()
        if engine.shared:
            engine.phase = "clean"
            logits, self.clean_cache = engine.forward(
                engine.pair.clean,
                torch.cat([tokens, tokens]),
                torch.cat([pads, pads]),
                column,
                self.clean_cache,
                lora_rows=n,
            )
            corrupt_logits = logits[:n]
        else:
            engine.phase = "corrupt"
            corrupt_logits, self.corrupt_cache = engine.forward(
                engine.pair.corrupt, tokens, pads, column, self.corrupt_cache
            )
            engine.phase = "clean"
            logits, self.clean_cache = engine.forward(
                engine.pair.clean, tokens, pads, column, self.clean_cache
            )
        engine.phase, engine.plan = None, None
        engine.captured.clear()
        if self.mode == "transient":  # the patched keys/values were for this step only
            clean_rows = self.clean_offset + self.ctx_of
            for layer, m in zip(self.clean_cache.layers, self.per_layer, strict=False):
                _reset_newest(layer, self.base, clean_rows[:m])
        self.rows["patched"] += len(self.ctx_of)
        self.rows["context"] += n
        clean_logits = logits[self.clean_offset : self.clean_offset + n]
        return step_metrics(
            corrupt_logits[self.ctx_of], clean_logits[self.ctx_of], logits[self.base :]
        )

    def _advance(self, keep: Tensor, next_tokens: Tensor) -> None:
        """Keep the live trajectories (`keep`: their row indices), append each one's next token,
        and regroup them by context: a context splits where its trajectories' tokens differ."""
        n, live, old_base = self.n_contexts, len(self.ctx_of), self.base
        old_mirrored = self.per_layer  # the step just taken
        key = self.ctx_of[keep] * self.engine.vocab + next_tokens[keep]
        unique, self.ctx_of = torch.unique(key, return_inverse=True)
        parent = unique // self.engine.vocab
        self.ctx_token, self.ctx_pad = unique % self.engine.vocab, self.ctx_pad[parent]
        self.alive = self.alive[keep]
        same_contexts = parent.numel() == n and bool(
            (parent == torch.arange(n, device=parent.device)).all()
        )
        if same_contexts and len(keep) == live:
            return  # nobody finished, no context split: the caches stay as they are
        base = torch.cat([parent, n + parent]) if self.engine.shared else parent
        if not self.engine.shared:
            for layer in self.corrupt_cache.layers:
                _select_rows(layer, parent)
        for layer, m in zip(self.clean_cache.layers, old_mirrored, strict=False):
            _select_rows(layer, torch.cat([base, old_base + keep[keep < m]]))

    def run(self) -> tuple[dict[str, Tensor], list[list[int]]]:
        """Decode to the end; per-step metrics as flat tensors and each trajectory's tokens (in
        the order the trajectories were given)."""
        records: list[dict[str, Tensor]] = []
        tokens: list[list[int]] = [[] for _ in self.trajectories]
        for step in range(self.max_new_tokens):
            metrics = self._step(self.width - 1 + step)
            if self.forced is None:
                next_tokens = metrics["y_patch"]
                finished = torch.isin(next_tokens, self.eos)
            else:
                next_tokens = self.forced[self.alive, step]
                finished = self.steps_left[self.alive] == step + 1
            record = {k: v.cpu() for k, v in metrics.items()}
            record["token_id"] = next_tokens.cpu()
            record["row"] = self.alive.cpu()
            record["step"] = torch.full((len(self.alive),), step)
            records.append(record)
            for row, token in zip(record["row"].tolist(), record["token_id"].tolist(), strict=True):
                tokens[row].append(token)
            if step + 1 == self.max_new_tokens or bool(finished.all()):
                break
            self._advance((~finished).nonzero()[:, 0], next_tokens)
        flat = {k: torch.cat([r[k] for r in records]) for k in records[0]}
        flat["prompt_id"] = torch.tensor([t.prompt_id for t in self.trajectories])[flat["row"]]
        flat["layer"], flat["head"] = self.layer.cpu()[flat["row"]], self.head.cpu()[flat["row"]]
        given = [tokens[self.order.index(i)] for i in range(len(tokens))]
        return flat, given


def _select_rows(layer, index: Tensor) -> None:
    """Keep the rows `index` of one cache layer."""
    if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
        return
    layer.batch_select_indices(index.to(layer.keys.device))


def _reset_newest(layer, first_patched: int, clean_rows: Tensor) -> None:
    """Set the newest cache column of the patched rows (from `first_patched` on) of one cache
    layer to their contexts' clean rows'."""
    if not len(clean_rows):
        return
    for states in (layer.keys, layer.values):
        patched = torch.arange(first_patched, first_patched + len(clean_rows), device=states.device)
        states[patched, :, -1] = states[clean_rows.to(states.device), :, -1]


def _steps_table(chunks: list[dict[str, Tensor]], site: str) -> pl.DataFrame:
    columns = {k: torch.cat([c[k] for c in chunks]).numpy() for k in chunks[0] if k != "row"}
    frame = pl.DataFrame(columns).with_columns(
        pl.lit(site).alias("site"),
        pl.when(pl.col("head") >= 0).then(pl.col("head")).cast(pl.Int64).alias("head"),
        pl.col("cts").fill_nan(None),
    )
    order = ["prompt_id", "site", "layer", "head", "step", "token_id", *STEP_COLUMNS]
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
