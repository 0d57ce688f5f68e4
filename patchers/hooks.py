"""Forward hooks on patch sites, only inside context managers that always remove them.

How the patcher reads or writes a site's activation: the CMAP engine, the reference, the
analyses and notebooks all go through `attach` (the engine adds, in its own context manager,
the layer hooks that let patched rows join the batch at their layer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from patchers.sites import Layout, site_module

# fn(activation) -> a new activation, or None to leave it. Activations are [batch, pos, d_model],
# or [batch, pos, heads, head_dim] for the `head` site.
SiteFn = Callable[[Tensor], Tensor | None]


@contextmanager
def attach(
    model: nn.Module, site: str, layer: int, fn: SiteFn, layout: Layout | None = None
) -> Iterator[None]:
    """Run `fn` on the activation at `site` of `layer` during every forward inside the block."""
    module, reads_input = site_module(model, site, layer, layout)
    if site == "head":
        heads = model.config.num_attention_heads
        handle = module.register_forward_pre_hook(_head_hook(fn, heads), with_kwargs=True)
    elif reads_input:
        handle = module.register_forward_pre_hook(_pre_hook(fn), with_kwargs=True)
    else:
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
