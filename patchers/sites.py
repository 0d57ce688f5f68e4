"""Patch sites and the trajectories a request expands to.

Site names follow TransformerLens hook points. For layer L of a decoder laid out as
`model.model.layers`:

- `resid_pre`: the input of decoder layer L;
- `attn_out`: the output of its self-attention (after `o_proj`);
- `mlp_out`: the output of its MLP;
- `resid_post`: the output of decoder layer L;
- `head`: the input of `o_proj` split into the query heads, one head at a time (GQA-aware: query
  heads, not key/value heads). The only true per-head site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from patchers.errors import PatchError

SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out", "head")

# Families whose decoder layers the engine knows; keyed on `config.model_type`.
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True, order=True)
class Target:
    """One patched trajectory's site: a layer, and a head for the `head` site."""

    layer: int
    head: int | None = None


def check_family(config) -> None:
    """Refuse model families whose layers the engine does not know."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise PatchError(
            f"unsupported architecture {model_type!r}; supported (decoders laid out as "
            f"model.model.layers): {', '.join(FAMILIES)}"
        )


def sliding_window(config, layer: int) -> int | None:
    """The attention window of one layer, None for full attention (as transformers masks it)."""
    window = getattr(config, "sliding_window", None)
    if window is None:
        return None
    if config.model_type == "mistral":
        return window
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and layer_types[layer] == "sliding_attention":
        return window
    return None


def resolve_targets(
    config,
    site: str,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> list[Target]:
    """Check a request against the model and list its targets, sorted by layer then head.

    `layers=None` means every layer; `heads=None` means every head (only for the `head` site).
    """
    if site not in SITES:
        raise PatchError(f"unknown site {site!r}; known: {', '.join(SITES)}")
    n_layers = config.num_hidden_layers
    layer_list = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if not layer_list:
        raise PatchError("no layers requested")
    for layer in layer_list:
        if not 0 <= layer < n_layers:
            raise PatchError(f"layer {layer} out of range; the model has layers 0..{n_layers - 1}")
    if site != "head":
        if heads is not None:
            raise PatchError(f"heads are only for the 'head' site, not {site!r}")
        return [Target(layer) for layer in sorted(set(layer_list))]
    n_heads = config.num_attention_heads
    head_list = list(range(n_heads)) if heads is None else [int(h) for h in heads]
    if not head_list:
        raise PatchError("no heads requested")
    for head in head_list:
        if not 0 <= head < n_heads:
            raise PatchError(f"head {head} out of range; the model has heads 0..{n_heads - 1}")
    return [
        Target(layer, head) for layer in sorted(set(layer_list)) for head in sorted(set(head_list))
    ]
