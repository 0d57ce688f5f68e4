"""Forward hooks on patch sites, only inside context managers that always remove them.

For reading or editing one site of an HF model by hand (notebooks, references, checks). The
CMAP engines do not need hooks: they step through the layers themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from peft import PeftModel
from torch import Tensor, nn

from patchers.errors import PatchError
from patchers.sites import SITES

# fn(activation) -> a new activation, or None to leave it. Activations are [batch, pos, d_model],
# or [batch, pos, heads, head_dim] for the `head` site.
SiteFn = Callable[[Tensor], Tensor | None]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of an HF causal LM (or of a PeftModel's base model)."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    layers = getattr(getattr(base, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise PatchError(f"{type(base).__name__} is not laid out as model.model.layers")
    return layers


@contextmanager
def attach(model: nn.Module, site: str, layer: int, fn: SiteFn) -> Iterator[None]:
    """Run `fn` on the activation at `site` of `layer` during every forward inside the block."""
    if site not in SITES:
        raise PatchError(f"unknown site {site!r}; known: {', '.join(SITES)}")
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise PatchError(f"layer {layer} out of range; the model has layers 0..{len(layers) - 1}")
    block = layers[layer]
    if site == "resid_pre":
        handle = block.register_forward_pre_hook(_pre_hook(fn), with_kwargs=True)
    elif site == "head":
        heads = block.self_attn.config.num_attention_heads
        handle = block.self_attn.o_proj.register_forward_pre_hook(
            _head_hook(fn, heads), with_kwargs=True
        )
    else:
        module = {"resid_post": block, "attn_out": block.self_attn, "mlp_out": block.mlp}[site]
        handle = module.register_forward_hook(_output_hook(fn))
    try:
        yield
    finally:
        handle.remove()


def _pre_hook(fn: SiteFn):
    def hook(module, args, kwargs):
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return hook


def _head_hook(fn: SiteFn, heads: int):
    def split(x: Tensor) -> Tensor | None:
        new = fn(x.view(*x.shape[:-1], heads, -1))
        return None if new is None else new.reshape(x.shape)

    return _pre_hook(split)


def _output_hook(fn: SiteFn):
    def hook(module, args, output):
        activation = output[0] if isinstance(output, tuple) else output
        new = fn(activation)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


def capture_last(store: dict[str, Tensor], key: str = "activation") -> SiteFn:
    """A hook fn that stores a copy of the last position's activation in `store[key]`."""

    def fn(activation: Tensor) -> None:
        store[key] = activation[:, -1].detach().clone()

    return fn


def replace_last(value: Tensor, head: int | None = None) -> SiteFn:
    """A hook fn that sets the last position (or one head of it) to `value`, on a copy."""

    def fn(activation: Tensor) -> Tensor:
        new = activation.clone()
        if head is None:
            new[:, -1] = value
        else:
            new[:, -1, head] = value[:, head] if value.dim() == new.dim() - 1 else value
        return new

    return fn
