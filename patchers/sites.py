"""Patch sites: one table, keyed on `config.model_type`, of where each family keeps them.

Site names follow TransformerLens hook points. For decoder layer L:

- `resid_pre`: the input of the layer;
- `resid_post`: its output;
- `attn_out`: what the attention block adds to the residual stream (the attention module's
  output, or its post-norm's where the family has sandwich norms: Gemma 2/3, OLMo 2);
- `mlp_out`: the same for the MLP (the MoE block's output in MoE models);
- `head`: the input of the attention output projection (`o_proj`, GPT-2's `attn.c_proj`, NeoX's
  `attention.dense`) split into the query heads, one head at a time: the only true per-head site.

Every activation is computed by the model's own modules; a site is a module whose output (or, for
`resid_pre` and `head`, input) a hook reads or writes. A family is a row of `LAYOUTS`. A model
whose `model_type` is not there is laid out by `discover_layout` from its module names, and the
engine checks it against a full forward (`patchers.reference.self_test`) before a long run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import nn

from patchers.errors import PatchError
from patchers.names import SITES


@dataclass(frozen=True)
class Layout:
    """Where one family keeps its decoder layers and, inside a layer, the sites' modules.

    `layers` is the path of the `ModuleList` of decoder layers from the causal LM and
    `final_norm` that of the norm between the last layer and the unembedding (the logit lens
    reads residuals through it); the others are paths inside one layer, None where the family
    has no such module.
    """

    layers: str = "model.layers"
    attn_out: str | None = "self_attn"
    mlp_out: str | None = "mlp"
    head: str | None = "self_attn.o_proj"
    final_norm: str | None = "model.norm"

    def module_path(self, site: str) -> str | None:
        """The module inside a layer whose output (input for `head`) is the site; '' = the layer."""
        if site in ("resid_pre", "resid_post"):
            return ""
        return getattr(self, site)


_PRE_NORM = Layout()
_SANDWICH = Layout(attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm")

LAYOUTS: dict[str, Layout] = {
    "llama": _PRE_NORM,
    "mistral": _PRE_NORM,
    "qwen2": _PRE_NORM,
    "qwen3": _PRE_NORM,
    "qwen3_moe": _PRE_NORM,
    "phi3": _PRE_NORM,
    "granite": _PRE_NORM,
    "gemma2": _SANDWICH,
    "gemma3_text": _SANDWICH,
    "olmo2": _SANDWICH,
    "gpt2": Layout(
        "transformer.h",
        attn_out="attn",
        mlp_out="mlp",
        head="attn.c_proj",
        final_norm="transformer.ln_f",
    ),
    "gpt_neox": Layout(
        "gpt_neox.layers",
        attn_out="attention",
        mlp_out="mlp",
        head="attention.dense",
        final_norm="gpt_neox.final_layer_norm",
    ),
}
FAMILIES = tuple(LAYOUTS)

# Module names the generic path looks for in a model outside the table.
_ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe")
_OUT_PROJ_NAMES = ("o_proj", "c_proj", "dense", "out_proj")
_FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "final_norm")


@dataclass(frozen=True, order=True)
class Target:
    """One patched trajectory's site: a layer, and a head for the `head` site."""

    layer: int
    head: int | None = None


def layout_of(model: nn.Module) -> Layout:
    """The layout of a causal LM: its family's row, or one discovered from its module names."""
    model_type = getattr(model.config, "model_type", None)
    layout = LAYOUTS.get(model_type) or discover_layout(model)
    layers = _get(model, layout.layers)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise PatchError(
            f"{type(model).__name__} ({model_type!r}) has no decoder layers at {layout.layers!r}"
        )
    return layout


def layout_for_config(config, trust_remote_code: bool = False) -> Layout:
    """The layout from `config.json` alone, before any weights load: the family's row, or the
    module names of the model built on the meta device (no memory, no weights)."""
    if config.model_type in LAYOUTS:
        return LAYOUTS[config.model_type]
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    try:
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PatchError(
            f"model_type {config.model_type!r} is not a causal LM transformers can build: {first}"
        ) from err
    return layout_of(model)


def discover_layout(model: nn.Module) -> Layout:
    """A layout found by module names: the decoder layers are the `ModuleList` of
    `config.num_hidden_layers` modules nearest the root; sites whose module is not found are
    not offered."""
    model_type = getattr(model.config, "model_type", None)
    n_layers = getattr(model.config, "num_hidden_layers", None)
    lists = [
        (path.count("."), path)
        for path, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and path and len(module) == n_layers
    ]
    if not lists:
        raise PatchError(
            f"{type(model).__name__} ({model_type!r}) has no list of {n_layers} decoder layers "
            "(config.num_hidden_layers) the patcher can hook"
        )
    layers_path = min(lists)[1]
    layer = _get(model, layers_path)[0]
    children = dict(layer.named_children())
    attn = next((name for name in _ATTENTION_NAMES if name in children), None)
    mlp = next((name for name in _MLP_NAMES if name in children), None)
    head = None
    if attn is not None:
        inner = dict(children[attn].named_children())
        out = next((name for name in _OUT_PROJ_NAMES if name in inner), None)
        head = f"{attn}.{out}" if out else None
    parent = layers_path.rpartition(".")[0]
    siblings = dict((_get(model, parent) if parent else model).named_children())
    norm = next((name for name in _FINAL_NORM_NAMES if name in siblings), None)
    final_norm = None if norm is None else f"{parent}.{norm}" if parent else norm
    return replace(
        Layout(layers_path), attn_out=attn, mlp_out=mlp, head=head, final_norm=final_norm
    )


def base_model(model: nn.Module) -> nn.Module:
    """The causal LM under a PeftModel (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model: nn.Module, layout: Layout | None = None) -> nn.ModuleList:
    """The decoder layers of a causal LM (a PeftModel's base model included)."""
    base = base_model(model)
    return _get(base, (layout or layout_of(base)).layers)


def site_module(model: nn.Module, site: str, layer: int, layout: Layout | None = None):
    """(module, reads_input) for a site of one layer; reads_input for `resid_pre` and `head`."""
    base = base_model(model)
    layout = layout or layout_of(base)
    check_site(base.config, layout, site)
    layers = decoder_layers(base, layout)
    if not 0 <= layer < len(layers):
        raise PatchError(f"layer {layer} out of range; the model has layers 0..{len(layers) - 1}")
    path = layout.module_path(site)
    module = _get(layers[layer], path) if path else layers[layer]
    return module, site in ("resid_pre", "head")


def check_site(config, layout: Layout, site: str) -> None:
    """Refuse an unknown site, or one this family has no module for, in one line."""
    if site not in SITES:
        raise PatchError(f"unknown site {site!r}; known: {', '.join(SITES)}")
    if layout.module_path(site) is None:
        offered = [s for s in SITES if layout.module_path(s) is not None]
        raise PatchError(
            f"model_type {getattr(config, 'model_type', None)!r} has no {site!r} site "
            f"(no module for it in its layers); it offers: {', '.join(offered)}"
        )


def resolve_targets(
    config,
    site: str,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    layout: Layout | None = None,
) -> list[Target]:
    """Check a request against the model and list its targets, sorted by layer then head.

    `layers=None` means every layer; `heads=None` means every head (only for the `head` site).
    """
    check_site(config, layout or LAYOUTS.get(config.model_type, _PRE_NORM), site)
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


def final_norm(model: nn.Module, layout: Layout | None = None) -> nn.Module:
    """The norm the last layer's output passes before the unembedding."""
    base = base_model(model)
    layout = layout or layout_of(base)
    module = _get(base, layout.final_norm) if layout.final_norm else None
    if module is None:
        raise PatchError(
            f"model_type {getattr(base.config, 'model_type', None)!r}: no final norm found "
            "before the unembedding (the logit lens needs it)"
        )
    return module


def _get(root: nn.Module, path: str):
    module = root
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module
