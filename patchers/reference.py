"""The slow, obviously correct CMAP reference: the paper's loop, one trajectory at a time.

Every step re-runs the whole sequence without a cache through the corrupted model (capturing the
site's activation), the clean model, and the clean model with that activation written in at the
last position (or, for "persistent", at every position from the last prompt token on), all with
hooks on the models' own full forward. The tests hold the engine to it on every family, and
`self_test` holds it to it on a model outside the family table before a long run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from patchers.hooks import attach
from patchers.models import input_device


@dataclass
class Side:
    """A model to hook (`module`) and how to get its logits [B, T, vocab] for ids [B, T]
    (`batch_logits`, keyword arguments passed to the model's forward) as that model (a LoRA
    pair's adapter off for the clean side)."""

    module: nn.Module
    batch_logits: Callable[..., Tensor]

    def forward(self, ids: Tensor) -> Tensor:
        """Logits [T, vocab] of ids [1, T]."""
        return self.batch_logits(ids)[0]


def pair_sides(pair) -> tuple[Side, Side]:
    """(clean, corrupted) sides of a `ModelPair`."""
    if pair.adapter is not None:
        return adapter_sides(pair.corrupt)
    return full_model_side(pair.clean), full_model_side(pair.corrupt)


def full_model_side(model: nn.Module) -> Side:
    """A model run as itself (any adapter layers peft attached to it switched off)."""
    from patchers.models import bare

    def logits(ids: Tensor, **kwargs) -> Tensor:
        with bare(model):
            return model(input_ids=ids, use_cache=False, **kwargs).logits

    return Side(model, logits)


def adapter_sides(peft_model) -> tuple[Side, Side]:
    """(clean, corrupted) views of a PeftModel: adapter disabled, adapter enabled."""

    def clean_logits(ids: Tensor, **kwargs) -> Tensor:
        with peft_model.disable_adapter():
            return peft_model(input_ids=ids, use_cache=False, **kwargs).logits

    return Side(peft_model, clean_logits), full_model_side(peft_model)


def three_logits(
    clean: Side, corrupt: Side, ids: Tensor, site: str, layer: int, head: int | None, first: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Last-position logits of the corrupted, clean and patched models on ids [1, T]; the patch
    writes the corrupted activation into positions first..T-1."""
    captured: dict[str, Tensor] = {}

    def capture(activation: Tensor) -> None:
        captured["all"] = activation.clone()

    def patch(activation: Tensor) -> Tensor:
        new = activation.clone()
        if head is None:
            new[:, first:] = captured["all"][:, first:]
        else:
            new[:, first:, head] = captured["all"][:, first:, head]
        return new

    with attach(corrupt.module, site, layer, capture):
        logits_corrupt = corrupt.forward(ids)[-1]
    logits_clean = clean.forward(ids)[-1]
    with attach(clean.module, site, layer, patch):
        logits_patch = clean.forward(ids)[-1]
    return logits_corrupt, logits_clean, logits_patch


def reference_cmap(
    clean: Side,
    corrupt: Side,
    prompt: list[int],
    site: str,
    layer: int,
    head: int | None,
    max_new_tokens: int,
    eos_token_ids: tuple[int, ...] = (),
    persistent: bool = False,
) -> list[dict]:
    """Per-step records of one trajectory."""
    context = list(prompt)
    records = []
    with torch.no_grad():
        for step in range(max_new_tokens):
            # Transient: only the last position; persistent: every position from the last
            # prompt token on (the positions whose patched states a cache would have kept).
            first = len(prompt) - 1 if persistent else len(context) - 1
            ids = torch.tensor([context], device=input_device(clean.module))
            corrupt_logits, clean_logits, patch_logits = three_logits(
                clean, corrupt, ids, site, layer, head, first
            )
            y_clean, y_corrupt = int(clean_logits.argmax()), int(corrupt_logits.argmax())
            token = int(patch_logits.argmax())

            def dl(logits: Tensor, yc: int = y_clean, yk: int = y_corrupt) -> float:
                return float(logits[yk] - logits[yc])

            cts = None
            if y_clean != y_corrupt:
                cts = (dl(patch_logits) - dl(clean_logits)) / (
                    dl(corrupt_logits) - dl(clean_logits)
                )
            records.append(
                {
                    "step": step,
                    "token_id": token,
                    "y_clean": y_clean,
                    "y_corrupt": y_corrupt,
                    "dl_patch": dl(patch_logits),
                    "dl_clean": dl(clean_logits),
                    "dl_corrupt": dl(corrupt_logits),
                    "cts": cts,
                }
            )
            context.append(token)
            if token in eos_token_ids:
                break
    return records


def self_test(pair, site: str, prompt: list[int], mode: str = "transient", steps: int = 2) -> None:
    """Check the engine against this reference on one short trajectory (the middle layer, head 0
    for `head`) before a long run on a model outside the family table; raise if they differ."""
    from patchers.cmap import _Engine
    from patchers.errors import PatchError
    from patchers.sites import Target

    config = pair.clean.config
    layer, head = config.num_hidden_layers // 2, 0 if site == "head" else None
    prompt = list(prompt)[-16:]
    ours = (
        _Engine(pair, site)
        .run([Target(layer, head)], [prompt], steps, (), mode, 1)
        .steps.sort("step")
        .to_dicts()
    )
    clean, corrupt = pair_sides(pair)
    ref = reference_cmap(
        clean, corrupt, prompt, site, layer, head, steps, persistent=mode == "persistent"
    )
    dtype = pair.clean.get_input_embeddings().weight.dtype
    tolerance = 1e-3 if dtype == torch.float32 else 5e-2
    for a, b in zip(ours, ref, strict=True):
        same_tokens = (a["token_id"], a["y_clean"], a["y_corrupt"]) == (
            b["token_id"],
            b["y_clean"],
            b["y_corrupt"],
        )
        close = all(
            abs(a[key] - b[key]) <= tolerance * (1 + abs(b[key]))
            for key in ("dl_patch", "dl_clean", "dl_corrupt")
        )
        if not (same_tokens and close):
            raise PatchError(
                f"the patcher does not reproduce a full forward of model_type "
                f"{config.model_type!r} at site {site!r} (layer {layer}, step {a['step']}); "
                "its layers need a row in patchers.sites.LAYOUTS"
            )
