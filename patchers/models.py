"""The clean/corrupted model pair: loading from disk and the checks that make patching meaningful.

The corrupted side is either a second full model or a PEFT LoRA adapter attached to the clean
model. With an adapter, one copy of the base weights serves clean, corrupted and patched rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer, ParamWrapper
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from patchers.errors import PatchError
from patchers.sites import layout_for_config, layout_of

# Config fields that must agree for activations of one model to mean anything in the other.
ARCHITECTURE_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "hidden_act",
    "rope_parameters",
    "sliding_window",
    "layer_types",
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelPair:
    """A clean model and its corrupted counterpart.

    `corrupt` is a full model of the same architecture, or a `PeftModel` whose base model is
    `clean` (its one active LoRA adapter is the corruption).
    """

    clean: PreTrainedModel
    corrupt: PreTrainedModel | PeftModel

    def __post_init__(self) -> None:
        layout_of(self.clean)
        if isinstance(self.corrupt, PeftModel):
            if self.corrupt.get_base_model() is not self.clean:
                raise PatchError(
                    "the corrupted adapter must be attached to the clean model "
                    "(PeftModel.from_pretrained(clean, adapter_dir))"
                )
            problem = shared_base_problem(self.corrupt)
            if problem:
                raise PatchError(f"{problem}; merge the adapter and pass a full corrupted model")
        else:
            check_same_architecture(self.clean.config, self.corrupt.config)

    @property
    def adapter(self) -> str | None:
        """The active adapter's name, or None when the corrupted model is a full model."""
        return self.corrupt.active_adapter if isinstance(self.corrupt, PeftModel) else None


def input_device(model) -> torch.device:
    """Where a model's input ids go: its embedding's device (the execution device, CPU, when
    accelerate has offloaded the embedding to disk)."""
    device = model.get_input_embeddings().weight.device
    return torch.device("cpu") if device.type == "meta" else device


@contextmanager
def bare(model: PreTrainedModel) -> Iterator[None]:
    """Run a model as itself, without the LoRA layers peft may have attached to its modules (a
    PeftModel's base model run on its own would otherwise be the adapted model). A PeftModel
    is itself with its adapter."""
    attached = [
        m
        for m in ([] if isinstance(model, PeftModel) else model.modules())
        if isinstance(m, BaseTunerLayer) and not m.disable_adapters
    ]
    for module in attached:
        module.enable_adapters(False)
    try:
        yield
    finally:
        for module in attached:
            module.enable_adapters(True)


def check_same_architecture(clean_config, corrupt_config) -> None:
    """Raise when two configs differ in a field that changes the architecture or vocabulary."""
    pairs = {
        f: (getattr(clean_config, f, None), getattr(corrupt_config, f, None))
        for f in ARCHITECTURE_FIELDS
    }
    differing = [f"{f} ({a!r} vs {b!r})" for f, (a, b) in pairs.items() if a != b]
    if differing:
        raise PatchError(f"clean and corrupted configs differ: {'; '.join(differing)}")


def shared_base_problem(peft_model: PeftModel) -> str | None:
    """Why an adapter cannot share the base weights with the clean rows, or None if it can.

    The engine runs clean, corrupted and patched rows in one forward of the base model, each
    LoRA linear map adding its delta to the corrupted rows only; that serves plain LoRA on
    linear maps, but not the LoRA variants (DoRA and others), other adapter types, adapted
    embeddings or modules the adapter trains whole (modules_to_save): those need a merged copy.
    """
    if len(peft_model.peft_config) != 1:
        return "the PeftModel must carry exactly one adapter"
    name = peft_model.active_adapter
    if getattr(peft_model.peft_config[name], "peft_type", None) != "LORA":
        return "only LoRA adapters can share the base weights"
    for path, module in peft_model.get_base_model().named_modules():
        if isinstance(module, AuxiliaryTrainingWrapper):
            return f"the adapter trains {path!r} whole (modules_to_save)"
        if isinstance(module, ParamWrapper):
            return f"the adapter wraps the parameters of {path!r}, which peft cannot batch"
        if isinstance(module, LoraLayer) and not isinstance(module, LoraLinear):
            return f"the adapter adapts {path!r} ({type(module).__name__}), not a linear map"
        if isinstance(module, LoraLayer) and name in getattr(module, "lora_variant", {}):
            return f"the adapter uses a LoRA variant (e.g. DoRA) on {path!r}"
    return None


def load_pair(
    clean_path: str | Path,
    corrupt_path: str | Path,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    offload_folder: str | Path | None = None,
) -> ModelPair:
    """Load a clean model and its corrupted counterpart (a model or a PEFT adapter directory).

    `device_map` (say "auto": every visible GPU, then CPU) places each model's modules with
    accelerate instead of moving it to `device`; its dispatch hooks run beside the patcher's.
    Modules mapped to "disk" are offloaded to `offload_folder`."""
    torch_dtype = _torch_dtype(dtype)
    placement = _Placement(device, device_map, offload_folder)
    clean_dir = _existing_dir(clean_path, "clean model")
    corrupt_dir = _existing_dir(corrupt_path, "corrupted model")
    clean_config = _load_config(clean_dir, trust_remote_code)
    layout_for_config(clean_config, trust_remote_code)
    clean = _load_model(clean_dir, torch_dtype, placement.of("clean"), trust_remote_code)
    if (corrupt_dir / "adapter_config.json").is_file():
        check_same_vocabulary(clean_dir, corrupt_dir)
        return _attach_adapter(
            clean, clean_dir, corrupt_dir, torch_dtype, placement.of("merged"), trust_remote_code
        )
    corrupt_config = _load_config(corrupt_dir, trust_remote_code)
    check_same_architecture(clean_config, corrupt_config)
    check_same_vocabulary(clean_dir, corrupt_dir)
    corrupt = _load_model(corrupt_dir, torch_dtype, placement.of("corrupt"), trust_remote_code)
    return ModelPair(clean=clean, corrupt=corrupt)


@dataclass(frozen=True)
class _Placement:
    """Where a model's weights go: one device, or an accelerate device map."""

    device: str | torch.device
    device_map: str | dict | None = None
    offload_folder: str | Path | None = None

    def of(self, name: str) -> dict:
        """from_pretrained's placement arguments for one model (its own offload folder)."""
        if self.device_map is None:
            return {"device": self.device}
        folder = None if self.offload_folder is None else str(Path(self.offload_folder) / name)
        return {"device_map": self.device_map, "offload_folder": folder}


def check_same_vocabulary(clean_dir: Path, corrupt_dir: Path) -> None:
    """Raise when both directories hold tokenizers whose vocabularies differ."""
    vocabs = [_tokenizer_vocab(d) for d in (clean_dir, corrupt_dir)]
    if None not in vocabs and vocabs[0] != vocabs[1]:
        raise PatchError(f"clean and corrupted tokenizers differ ({clean_dir} vs {corrupt_dir})")


def _tokenizer_vocab(directory: Path) -> dict | None:
    """The token-to-id map of tokenizer.json (or vocab.json), None when the model ships neither."""
    for name in ("tokenizer.json", "vocab.json"):
        path = directory / name
        if path.is_file():
            data = json.loads(path.read_text())
            if name == "vocab.json":
                return data
            added = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
            return {**data.get("model", {}).get("vocab", {}), **added}
    return None


def _attach_adapter(
    clean: PreTrainedModel,
    clean_dir: Path,
    adapter_dir: Path,
    dtype: torch.dtype,
    placement: dict,
    trust_remote_code: bool,
) -> ModelPair:
    """Attach an adapter to the clean model; merge it into a second copy if it cannot share."""
    offloaded = sorted(k for k, v in getattr(clean, "hf_device_map", {}).items() if v == "disk")
    if offloaded:  # peft fails on them, and leaves a copy of the weights under the cwd
        raise PatchError(
            f"cannot attach the adapter in {adapter_dir}: the device map offloads "
            f"{', '.join(offloaded)} to disk, which peft cannot adapt; map them to a GPU or "
            "the CPU, or pass a merged corrupted model"
        )
    try:
        peft_model = PeftModel.from_pretrained(clean, str(adapter_dir), adapter_name="corrupt")
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise PatchError(f"cannot load the adapter in {adapter_dir}: {_first_line(err)}") from err
    peft_model.eval()
    if shared_base_problem(peft_model) is None:
        return ModelPair(clean=clean, corrupt=peft_model)
    # Fall back to two full models: the adapter merged into its own copy of the base.
    peft_model.unload()
    base = _load_model(clean_dir, dtype, placement, trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    return ModelPair(clean=clean, corrupt=merged.eval())


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise PatchError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _existing_dir(path: str | Path, what: str) -> Path:
    directory = Path(path)
    if not directory.is_dir():
        raise PatchError(f"{what} not found: {directory}")
    if (
        not (directory / "config.json").is_file()
        and not (directory / "adapter_config.json").is_file()
    ):
        raise PatchError(
            f"{what} {directory} has neither config.json (a model) nor adapter_config.json "
            "(a PEFT adapter)"
        )
    return directory


def _load_config(directory: Path, trust_remote_code: bool):
    try:
        return AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise PatchError(f"cannot read the config in {directory}: {_first_line(err)}") from err


def _load_model(
    directory: Path, dtype: torch.dtype, placement: dict, trust_remote_code: bool
) -> PreTrainedModel:
    """A model on `placement`'s device, or dispatched by its device map."""
    placement = dict(placement)
    device = placement.pop("device", None)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(directory), dtype=dtype, trust_remote_code=trust_remote_code, **placement
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise PatchError(f"cannot load the model in {directory}: {_first_line(err)}") from err
    return (model if device is None else model.to(device)).eval()


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
