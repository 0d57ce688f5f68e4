"""Checks that need no weights, done before any model loads.

A layer the model does not have, a head on a site without heads or a misspelt mode should fail
in a second, not after minutes of loading (or hours of fine-tuning). Layer and head ranges come
from the clean model's ``config.json`` (read as JSON: no weights, no transformers import); every
problem found is named in one ``ConfigError`` (exit code 2).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import ExperimentConfig
from harness.errors import ConfigError
from patchers.names import SITES

# config.json keys across families (GPT-2 and GPT-J spell them their own way)
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads")


@dataclass(frozen=True)
class ModelShape:
    """What a model's config.json says about where it can be patched."""

    layers: int
    heads: int | None
    model_type: str | None
    source: Path


def _first(config: dict[str, Any], keys: Sequence[str]) -> int | None:
    for key in keys:
        if isinstance(config.get(key), int):
            return config[key]
    return None


def model_shape(ref: str, _depth: int = 0) -> ModelShape | None:
    """Layers and heads from a model directory's config.json (an adapter: its base's).

    None when no config can be read without a download (a hub id not in the local cache): the
    loader then reports what it finds.
    """
    path = Path(ref).expanduser()
    if not path.is_dir():
        path = _cached_hub_dir(ref)
        if path is None:
            return None
    config_file = path / "config.json"
    if not config_file.is_file():
        adapter = path / "adapter_config.json"
        if _depth == 0 and adapter.is_file():
            try:
                base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            except (OSError, ValueError):
                return None
            return model_shape(base, 1) if isinstance(base, str) else None
        return None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
    config = {**config, **(text or {})}  # multimodal models keep the decoder's numbers here
    layers = _first(config, LAYER_KEYS)
    if layers is None:
        return None
    return ModelShape(layers, _first(config, HEAD_KEYS), config.get("model_type"), config_file)


def _cached_hub_dir(ref: str) -> Path | None:
    """The local snapshot of a hub id, if the Hugging Face cache has its config.json."""
    if "/" not in ref or ref.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(ref, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def range_problems(
    shape: ModelShape | None,
    layers: Sequence[int] | None,
    heads: Sequence[int] | None,
    *,
    layers_key: str,
    heads_key: str,
) -> list[str]:
    """Layers and heads the model does not have (nothing to say without its config)."""
    if shape is None:
        return []
    problems = []
    outside = sorted({layer for layer in layers or () if layer >= shape.layers})
    if outside:
        problems.append(
            f"{layers_key}: {_listed(outside)} out of range: the model has {shape.layers} "
            f"layers (0-{shape.layers - 1}, {shape.source})"
        )
    if shape.heads is not None:
        outside = sorted({head for head in heads or () if head >= shape.heads})
        if outside:
            problems.append(
                f"{heads_key}: {_listed(outside)} out of range: the model has {shape.heads} "
                f"attention heads per layer (0-{shape.heads - 1})"
            )
    return problems


def layout_problems(
    shape: ModelShape | None, sites: Sequence[str], key: str, trust_remote_code: bool = False
) -> list[str]:
    """A clean model the patcher cannot lay out, or a site its family has no module for.

    A family of the site table offers every site; any other is laid out from its module names
    on the meta device (no weights), which needs transformers but no download."""
    from patchers.errors import PatchError
    from patchers.sites import LAYOUTS, check_site, layout_for_config

    if shape is None or shape.model_type in LAYOUTS:
        return []
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            str(shape.source.parent), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as err:
        return [f"{key}: cannot read {shape.source}: {str(err).strip().splitlines()[0]}"]
    try:
        layout = layout_for_config(config, trust_remote_code)
        for site in sites:
            if site in SITES:
                check_site(config, layout, site)
    except PatchError as err:
        return [f"{key}: {err}"]
    return []


def _listed(values: list[int]) -> str:
    return ", ".join(map(str, values))


def check_experiment(
    cfg: ExperimentConfig,
    *,
    force: Sequence[str] = (),
    until: str | None = None,
    stages: Sequence[str] = (),
) -> None:
    """What ``harness run`` checks before it writes or loads anything: ``--force`` and
    ``--until`` against the stage names, the patch section against the clean model's
    config.json, ``eval.tasks`` against lm-eval's index. Raises one ``ConfigError`` naming every
    problem."""
    problems = []
    unknown = sorted(set(force) - set(stages))
    if unknown:
        problems.append(f"--force {', '.join(unknown)}: unknown stage (known: {', '.join(stages)})")
    if until is not None and until not in stages:
        problems.append(f"--until {until!r}: unknown stage; known: {', '.join(stages)}")
    problems += eval_problems(cfg)
    problems += patch_problems(cfg)
    problems += analyze_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


def eval_problems(cfg: ExperimentConfig) -> list[str]:
    """``eval.tasks`` that lm-eval does not know, or whose data cannot be loaded; in-process
    replicas without Ray."""
    from harness.lm_tasks import plan_eval

    replicas = cfg.eval.serve.data_parallel_size
    if cfg.eval.engine == "vllm" and replicas > 1 and importlib.util.find_spec("ray") is None:
        return [
            f"eval.serve.data_parallel_size: {replicas} in process needs Ray, which is not "
            "installed (pip install 'cmap-harness[ray]'), or set eval.engine: vllm-server"
        ]
    try:
        plan_eval(cfg.eval)
    except ConfigError as err:
        return [str(err)]
    return []


def patch_problems(cfg: ExperimentConfig, clean: str | None = None) -> list[str]:
    """The patch section against the clean model (``clean``: its resolved path; default:
    the config's, resolved). Nothing when patching is off."""
    patch = cfg.patch
    if not patch.enabled:
        return []
    problems = []
    if patch.workers > 1 and importlib.util.find_spec("ray") is None:
        problems.append(
            f"patch.workers: {patch.workers} needs Ray, which is not installed "
            "(pip install 'cmap-harness[ray]'), or set patch.workers: 1"
        )
    if patch.heads is not None and "head" not in patch.sites:
        problems.append(
            f"patch.heads: set, but patch.sites ({', '.join(patch.sites)}) has no 'head' "
            "site, the only one with heads"
        )
    shape = _shape_of(clean or cfg.models.clean)
    problems += layout_problems(shape, patch.sites, "models.clean", cfg.models.trust_remote_code)
    problems += range_problems(
        shape,
        patch.requested_layers(),
        patch.requested_heads(),
        layers_key="patch.layers",
        heads_key="patch.heads",
    )
    return problems


def analyze_problems(cfg: ExperimentConfig, clean: str | None = None) -> list[str]:
    """``analyze.layers`` against the clean model's config.json (``clean`` as for
    ``patch_problems``). Nothing when the analyses do not run or take every layer."""
    analyze = cfg.analyze
    if not (analyze.enabled and cfg.patch.enabled) or analyze.layers == "all":
        return []
    shape = _shape_of(clean or cfg.models.clean)
    return range_problems(shape, analyze.layers, None, layers_key="analyze.layers", heads_key="")


def _shape_of(ref: str) -> ModelShape | None:
    """The shape of a model reference; an unbuilt ``zoo:`` model has none yet."""
    from harness.config import ZOO_PREFIX

    if ref.startswith(ZOO_PREFIX):
        from harness.zoo import find_built

        built = find_built()
        name = ref.removeprefix(ZOO_PREFIX)
        if built is None or not hasattr(built, name):
            return None
        ref = str(getattr(built, name))
    return model_shape(ref)
