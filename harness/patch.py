"""``harness patch``: format prompts, run CMAP, write prompts/steps/texts parquet files.

The patcher works on token ids; this module owns turning questions into those ids with the
shared prompt format, and the generated ids back into text. Every patched text says why it
ended (``finish_reason``: ``stop`` at an end-of-sequence token, ``length`` at the token limit)
and how many tokens it has, so a cut-off answer is never mistaken for a finished one.

It also owns the sanity checks a patch run can do for free or nearly (``sanity_checks``):
patching the last layer's ``resid_post`` must reproduce the corrupted model token for token, and
its generation must equal the corrupted model's own greedy generation (Hugging Face forward
passes, not the patcher's engine); patching the clean model into itself must leave the clean
model's greedy generation.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from harness.errors import HarnessError
from tasks.prompt_format import PromptFormat

if TYPE_CHECKING:
    from harness.config import PatchConfig
    from patchers.models import ModelPair

OUTPUT_FILES = ("prompts.parquet", "steps.parquet", "texts.parquet")
FINISH_REASONS = {"eos": "stop", "length": "length"}  # the patcher's word -> vLLM's / OpenAI's
TEXT_SCHEMA = {
    "prompt_id": pl.Int64,
    "site": pl.String,
    "layer": pl.Int64,
    "head": pl.Int64,
    "text": pl.String,
    "token_ids": pl.List(pl.Int64),
    "finish_reason": pl.String,
    "n_tokens": pl.Int64,
}
CHECK_TITLES = {
    "last_layer_tokens": "patching the last layer's resid_post reproduces y_corrupt at every step",
    "last_layer_generation": "the patched generation at the last layer's resid_post equals the "
    "corrupted model's own greedy generation (Hugging Face forward passes)",
    "identity": "patching the clean model into itself leaves the clean model's greedy "
    "generation (its own next token at every step)",
}
CHECK_SCHEMA = {
    "check": pl.String,
    "site": pl.String,
    "layer": pl.Int64,
    "head": pl.Int64,
    "prompt_id": pl.Int64,
    "passed": pl.Boolean,
    "steps": pl.Int64,
    "first_mismatch": pl.Int64,
    "expected": pl.String,
    "got": pl.String,
    "note": pl.String,
}


@dataclass(frozen=True)
class LoadedModels:
    """The pair, its tokenizer and end-of-sequence ids: loaded once for all sites and checks."""

    clean: str
    corrupt: str
    pair: ModelPair
    tokenizer: Any
    eos: frozenset[int]
    dtype: str
    device: str

    @property
    def n_layers(self) -> int:
        return int(self.pair.clean.config.num_hidden_layers)


def load_models(
    clean: str,
    corrupt: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> LoadedModels:
    """Load the clean/corrupted pair and the clean tokenizer (the pair shares its vocabulary)."""
    from transformers import AutoTokenizer

    from patchers import load_pair

    pair = load_pair(
        clean,
        corrupt,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        device_map=device_map,
    )
    tokenizer = AutoTokenizer.from_pretrained(clean, trust_remote_code=trust_remote_code)
    eos = frozenset({tokenizer.eos_token_id, *_config_eos(pair.clean.config)} - {None})
    return LoadedModels(clean, corrupt, pair, tokenizer, eos, dtype, device)


def encode_prompts(
    models: LoadedModels, questions: Sequence[str], prompt_format: PromptFormat | None = None
) -> list[list[int]]:
    """Questions as the token ids the evaluation sent (the shared prompt format)."""
    prompt_format = prompt_format or PromptFormat()
    return [prompt_format.encode(models.tokenizer, q) for q in questions]


def encode_questions(
    clean: str, questions: Sequence[str], prompt_format: PromptFormat, trust_remote_code: bool
) -> list[list[int]]:
    """``encode_prompts`` with the clean model's tokenizer alone (no weights loaded)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(clean, trust_remote_code=trust_remote_code)
    return [prompt_format.encode(tokenizer, q) for q in questions]


@dataclass(frozen=True)
class PatchOutputs:
    out_dir: Path
    prompts: pl.DataFrame
    steps: pl.DataFrame
    texts: pl.DataFrame


def read_responses(path: Path, column: str) -> list[str]:
    """The responses to force, from a JSONL or parquet file's ``column``."""
    if path.suffix not in (".parquet", ".jsonl"):
        raise HarnessError(f"{path}: responses come from a parquet or JSONL file")
    return _column(path, (column,))


def read_prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """Questions from ``--prompt`` or a file: text (one per line), JSONL or parquet with a
    ``question`` or ``prompt`` column (e.g. an evaluation's ``flagged.parquet``)."""
    if (prompt is None) == (prompts_file is None):
        raise HarnessError("give exactly one of --prompt TEXT or --prompts FILE")
    if prompt is not None:
        questions = [prompt]
    elif not prompts_file.is_file():
        raise HarnessError(f"prompts file {prompts_file} not found")
    elif prompts_file.suffix in (".parquet", ".jsonl"):
        questions = _column(prompts_file)
    else:
        questions = [line for line in prompts_file.read_text().splitlines() if line.strip()]
    if not questions or not all(q.strip() for q in questions):
        raise HarnessError(f"no prompts in {prompts_file or '--prompt'} (empty text)")
    return questions


def _column(path: Path, names: Sequence[str] = ("question", "prompt")) -> list[str]:
    """The first of ``names`` that the JSONL or parquet file has, as strings."""
    try:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
    except Exception as exc:  # polars raises several types for unreadable files
        raise HarnessError(f"{path}: unreadable ({str(exc).splitlines()[0]})") from None
    for name in names:
        if name in frame.columns:
            return frame[name].cast(pl.String).to_list()
    wanted = " or ".join(f"{n!r}" for n in names)
    raise HarnessError(f"{path}: no {wanted} column (has: {frame.columns})")


def run_patch(
    models: LoadedModels,
    questions: list[str],
    out_dir: Path,
    patch: PatchConfig,
    prompt_format: PromptFormat,
    max_new_tokens: int,
    sites: Sequence[str] | None = None,
) -> PatchOutputs:
    """Patch every question at the layers (and heads) of ``patch``, at ``sites`` (default:
    ``patch.sites``), generating at most ``max_new_tokens``; write the three tables atomically."""
    check_out_dir(out_dir)
    prompt_ids = encode_prompts(models, questions, prompt_format)
    sites = list(sites or patch.sites)
    tables = [patch_site(models, prompt_ids, patch, max_new_tokens, site) for site in sites]
    spec = patch_spec(models.clean, models.corrupt, sites, patch, max_new_tokens, models.device,
                      prompt_format)  # fmt: skip
    return write_patch(out_dir, questions, prompt_ids, tables, spec)


def patch_site(
    models: LoadedModels,
    prompt_ids: list[list[int]],
    patch: PatchConfig,
    max_new_tokens: int,
    site: str,
    batches: range | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One site's steps and texts tables; ``batches``: only those of the engine's batches (a
    shard, ``harness.shards``), whose rows are the whole run's for them."""
    from patchers import run_cmap

    result = run_cmap(models.pair, prompt_ids, site=site, layers=patch.requested_layers(),
                      heads=patch.site_heads(site),
                      max_new_tokens=max_new_tokens, eos_token_ids=models.eos,
                      mode=patch.mode, max_batch=patch.max_batch, batches=batches)  # fmt: skip
    return result.steps, texts_table(result.generations, models.tokenizer)


def patch_spec(
    clean: str,
    corrupt: str,
    sites: Sequence[str],
    patch: PatchConfig,
    max_new_tokens: int,
    device: str,
    prompt_format: PromptFormat,
) -> dict[str, Any]:
    """What ``patch.json`` says made the tables."""
    return {
        "clean": clean,
        "corrupt": corrupt,
        "sites": list(sites),
        "mode": patch.mode,
        "max_new_tokens": max_new_tokens,
        "dtype": patch.dtype,
        "device": device,
        "prompt_format": prompt_format.model_dump(),
    }


def write_patch(
    out_dir: Path,
    questions: list[str],
    prompt_ids: list[list[int]],
    tables: Sequence[tuple[pl.DataFrame, pl.DataFrame]],
    spec: dict[str, Any],
) -> PatchOutputs:
    """The prompts table and every site's (steps, texts), written atomically."""
    prompts = pl.DataFrame(
        {"prompt_id": range(len(questions)), "prompt": questions, "prompt_ids": prompt_ids},
        schema={"prompt_id": pl.Int64, "prompt": pl.String, "prompt_ids": pl.List(pl.Int64)},
    )
    steps = pl.concat([site_steps for site_steps, _ in tables])
    texts = pl.concat([site_texts for _, site_texts in tables])
    write_tables(out_dir, {"prompts": prompts, "steps": steps, "texts": texts}, spec)
    return PatchOutputs(out_dir, prompts, steps, texts)


def run_screen(
    models: LoadedModels,
    questions: list[str],
    responses: list[str],
    out_dir: Path,
    patch: PatchConfig,
    prompt_format: PromptFormat,
) -> PatchOutputs:
    """The teacher-forced screen: each question's fixed ``responses`` entry (say the corrupted
    model's answer in ``flagged.parquet``) forced through the three models at every layer of
    ``patch`` and each of its sites; ``token_id`` is the forced token, ``y_patch`` the patched
    model's argmax. Writes prompts and steps (no texts: nothing is generated)."""
    from patchers import run_cmap_teacher_forced

    check_out_dir(out_dir)
    if len(questions) != len(responses):
        raise HarnessError(f"{len(questions)} questions but {len(responses)} responses")
    kept = [i for i, r in enumerate(responses) if r and r.strip()]
    if not kept:
        raise HarnessError("no non-empty responses to force")
    prompt_ids = encode_prompts(models, [questions[i] for i in kept], prompt_format)
    forced = [models.tokenizer.encode(responses[i], add_special_tokens=False) for i in kept]
    steps = pl.concat(
        run_cmap_teacher_forced(
            models.pair,
            prompt_ids,
            forced,
            site=site,
            layers=patch.requested_layers(),
            heads=patch.site_heads(site),
            mode=patch.mode,
        )
        for site in patch.sites
    )
    prompts = pl.DataFrame(
        {
            "prompt_id": range(len(kept)),
            "prompt": [questions[i] for i in kept],
            "prompt_ids": prompt_ids,
            "response_ids": forced,
        },
        schema={
            "prompt_id": pl.Int64,
            "prompt": pl.String,
            "prompt_ids": pl.List(pl.Int64),
            "response_ids": pl.List(pl.Int64),
        },
    )
    texts = pl.DataFrame(schema=TEXT_SCHEMA)
    spec = {
        "clean": models.clean,
        "corrupt": models.corrupt,
        "sites": list(patch.sites),
        "mode": patch.mode,
        "teacher_forced": True,
        "dtype": models.dtype,
        "device": models.device,
        "prompt_format": prompt_format.model_dump(),
    }
    write_tables(out_dir, {"prompts": prompts, "steps": steps, "texts": texts}, spec)
    return PatchOutputs(out_dir, prompts, steps, texts)


def texts_table(generations: pl.DataFrame, tokenizer: Any) -> pl.DataFrame:
    """The patcher's generations as text, with ``finish_reason`` (stop/length) and ``n_tokens``."""
    token_ids = generations["token_ids"].to_list()
    return (
        generations.with_columns(
            pl.Series(
                "text", tokenizer.batch_decode(token_ids, skip_special_tokens=True), dtype=pl.String
            ),
            pl.col("stop")
            .replace_strict(FINISH_REASONS, return_dtype=pl.String)
            .alias("finish_reason"),
            pl.col("token_ids").list.len().cast(pl.Int64).alias("n_tokens"),
        )
        .select(list(TEXT_SCHEMA))
        .cast(TEXT_SCHEMA)
    )


def _config_eos(config) -> list[int]:
    eos = getattr(config, "eos_token_id", None)
    return eos if isinstance(eos, list) else [eos]


def greedy_generations(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos: frozenset[int],
    batch_size: int = 32,
    within: Callable[[list[int]], AbstractContextManager] | None = None,
) -> list[list[int]]:
    """A model's own greedy generation per prompt: its Hugging Face forward with a KV cache.

    A plain argmax loop, not ``generate``: a model's ``generation_config`` (repetition penalty,
    suppressed tokens) would otherwise change what "greedy" means. Each generation ends at the
    first end-of-sequence token (kept, as the patcher keeps it) or at ``max_new_tokens``.
    ``within(prompt indices)`` wraps the decoding of each batch of those prompts (per-row
    interventions: the batch's rows are those prompts, in that order); what it yields, if not
    None, is called with the rows kept whenever finished generations leave the batch.
    """
    import torch

    device = next(model.parameters()).device
    stop = torch.tensor(sorted(eos), dtype=torch.long, device=device)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))  # less padding
    out: dict[int, list[int]] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(prompt_ids[i]) for i in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(chunk):
                ids[row, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
                mask[row, width - len(prompt_ids[i]) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with within(chunk) if within else nullcontext() as narrow:
                out.update(zip(chunk, _decode(model, ids, mask, positions, max_new_tokens, stop,
                                              narrow), strict=True))  # fmt: skip
    return [out[i] for i in range(len(prompt_ids))]


def _decode(model, ids, mask, positions, max_new_tokens: int, stop, narrow=None) -> list[list[int]]:
    """Greedy tokens of a left-padded batch until each row's end token or the limit. A row
    leaves the batch when it ends (its cache rows with it; `narrow(kept rows)` is told)."""
    import torch

    from patchers.cache import engine_cache

    cache = engine_cache(model.config)
    output = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   past_key_values=cache, use_cache=True)  # fmt: skip
    tokens: list[list[int]] = [[] for _ in range(len(ids))]
    live = list(range(len(ids)))  # the batch's rows, as rows of `ids`
    for step in range(max_new_tokens):
        next_ids = output.logits[:, -1].float().argmax(-1)
        for row, token in zip(live, next_ids.tolist(), strict=True):
            tokens[row].append(token)
        going = ~torch.isin(next_ids, stop)
        if not bool(going.any()) or step + 1 == max_new_tokens:
            break
        if not bool(going.all()):
            kept = going.nonzero()[:, 0]
            cache.batch_select_indices(kept)
            live = [live[i] for i in kept.tolist()]
            mask, positions, next_ids = mask[kept], positions[kept], next_ids[kept]
            if narrow is not None:
                narrow(kept)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        output = model(
            input_ids=next_ids[:, None],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
    return tokens


def clean_greedy(
    models: LoadedModels, prompt_ids, max_new_tokens: int, **options: Any
) -> list[list[int]]:
    """The clean model's greedy generations (an attached corrupting adapter switched off);
    `options` are ``greedy_generations``'s."""
    from peft import PeftModel

    corrupt, clean = models.pair.corrupt, models.pair.clean
    off = corrupt.disable_adapter() if isinstance(corrupt, PeftModel) else nullcontext()
    with off:
        return greedy_generations(clean, prompt_ids, max_new_tokens, models.eos, **options)


def corrupt_greedy(
    models: LoadedModels, prompt_ids, max_new_tokens: int, **options: Any
) -> list[list[int]]:
    """The corrupted model's greedy generations (the adapter on, where it is one)."""
    return greedy_generations(
        models.pair.corrupt, prompt_ids, max_new_tokens, models.eos, **options
    )


def identity_pair(pair: ModelPair) -> ModelPair:
    """The clean model as both sides: its corrupted rows use the clean (base) weights."""
    from patchers.models import ModelPair

    return ModelPair(clean=pair.clean, corrupt=pair.clean)


def last_layer_run(
    models: LoadedModels, prompt_ids, max_new_tokens: int, mode: str = "transient"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Steps and generations of patching the last layer's ``resid_post`` (for the checks)."""
    from patchers import run_cmap

    result = run_cmap(
        models.pair,
        prompt_ids,
        site="resid_post",
        layers=[models.n_layers - 1],
        max_new_tokens=max_new_tokens,
        eos_token_ids=models.eos,
        mode=mode,
    )
    return result.steps, result.generations


def sanity_checks(
    models: LoadedModels,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    mode: str = "transient",
    last_layer: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    identity: Sequence[tuple[str, int, int | None]] = (),
    reference: Sequence[int] | None = None,
) -> pl.DataFrame:
    """One row per check and prompt (see ``CHECK_TITLES``): ``passed`` False is a failure, null
    a check that does not apply to this pair (``note`` says why).

    ``last_layer``: (steps, generations) of the last layer's ``resid_post`` when a site run
    already has them (else patched here: one trajectory per prompt). ``identity``: (site,
    layer, head) targets at which to patch the clean model into itself; its patched token must
    be the clean model's next token at every step. ``reference``: the prompts (indices) whose
    generation is compared with the corrupted model's own greedy generation, the one check
    that needs extra forward passes; None: every prompt.
    """
    from patchers import run_cmap

    rows: list[dict[str, Any]] = []
    last = {"site": "resid_post", "layer": models.n_layers - 1, "head": None}
    differ = head_difference(models.pair)
    if differ is not None:
        note = f"not applicable: {differ}, so the patched model is not the corrupted one there"
        for check in ("last_layer_tokens", "last_layer_generation"):
            rows += [_row(check, last, i, None, None, note=note) for i in range(len(prompt_ids))]
    else:
        steps, texts = last_layer or last_layer_run(models, prompt_ids, max_new_tokens, mode)
        tokens = _step_tokens(steps, "y_corrupt")
        for i in range(len(prompt_ids)):
            want, got = tokens.get(i, ([], []))
            rows.append(_row("last_layer_tokens", last, i, want, got, models.tokenizer))
        patched = _by_prompt(texts)
        chosen = list(range(len(prompt_ids))) if reference is None else list(reference)
        greedy = corrupt_greedy(models, [prompt_ids[i] for i in chosen], max_new_tokens)
        for i, want in zip(chosen, greedy, strict=True):
            got = patched.get(i, [])
            rows.append(_row("last_layer_generation", last, i, want, got, models.tokenizer))
    same = identity_pair(models.pair) if identity else None
    for site, layer, head in identity:
        result = run_cmap(
            same,
            prompt_ids,
            site=site,
            layers=[layer],
            heads=None if head is None else [head],
            max_new_tokens=max_new_tokens,
            eos_token_ids=models.eos,
            mode=mode,
        )
        tokens = _step_tokens(result.steps, "y_clean")
        target = {"site": site, "layer": layer, "head": head}
        for i in range(len(prompt_ids)):
            want, got = tokens.get(i, ([], []))
            rows.append(_row("identity", target, i, want, got, models.tokenizer))
    return pl.DataFrame(rows, schema=CHECK_SCHEMA)


def _step_tokens(steps: pl.DataFrame, column: str) -> dict[int, tuple[list[int], list[int]]]:
    """Per prompt: the unpatched model's next tokens (``column``) and the patched ones."""
    per_prompt = steps.sort("step").group_by("prompt_id").agg(column, "token_id")
    return {r[0]: (r[1], r[2]) for r in per_prompt.iter_rows()}


def head_difference(pair: ModelPair) -> str | None:
    """Why the clean model's final norm and unembedding are not the corrupted model's, if so.

    Above the last layer's ``resid_post`` the patched model runs only the clean final norm and
    LM head; only when those equal the corrupted model's is that patch the corrupted model.
    """
    from peft import PeftModel

    if isinstance(pair.corrupt, PeftModel):  # adapters edit decoder layers only
        return None
    for name in ("model.norm", "lm_head"):
        mine = dict(pair.clean.get_submodule(name).named_parameters())
        theirs = dict(pair.corrupt.get_submodule(name).named_parameters())
        if mine.keys() != theirs.keys() or any(not torch_equal(mine[k], theirs[k]) for k in mine):
            return f"the corrupted model's {name} differs from the clean model's"
    return None


def torch_equal(a: Any, b: Any) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b.to(a.device, a.dtype)))


def _by_prompt(generations: pl.DataFrame) -> dict[int, list[int]]:
    ids, tokens = generations["prompt_id"].to_list(), generations["token_ids"].to_list()
    return dict(zip(ids, tokens, strict=True))


def _row(
    check: str,
    target: dict[str, Any],
    prompt_id: int,
    want: list[int] | None,
    got: list[int] | None,
    tokenizer: Any = None,
    note: str | None = None,
) -> dict[str, Any]:
    """A check's row: where two token sequences first differ; their texts only when they do."""
    row = {"check": check, **target, "prompt_id": prompt_id, "note": note}
    if want is None or got is None:
        return row | {"passed": None, "steps": None, "first_mismatch": None}
    mismatch = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), None)
    if mismatch is None and len(want) != len(got):
        mismatch = min(len(want), len(got))
    failed = mismatch is not None
    return row | {
        "passed": not failed,
        "steps": len(got),
        "first_mismatch": mismatch,
        "expected": tokenizer.decode(want) if failed else None,
        "got": tokenizer.decode(got) if failed else None,
    }


def checks_summary(checks: pl.DataFrame) -> list[dict[str, Any]]:
    """Per check: status (passed / failed / not_applicable), prompts, failures, the first one."""
    out = []
    for name, title in CHECK_TITLES.items():
        rows = checks.filter(pl.col("check") == name)
        if rows.is_empty():
            continue
        failed = rows.filter(pl.col("passed").not_()).sort("prompt_id", "site")
        applies = rows["passed"].null_count() < rows.height
        entry: dict[str, Any] = {
            "check": name,
            "title": title,
            "status": "failed" if failed.height else "passed" if applies else "not_applicable",
            "passed": failed.is_empty() if applies else None,
            "prompts": rows["prompt_id"].n_unique(),
            "failed": failed.height,
            "of": rows.height,
            "sites": sorted(set(rows["site"].to_list())),
        }
        if not applies:
            entry["note"] = rows["note"][0]
        if failed.height:
            first = failed.row(0, named=True)
            keys = ("prompt_id", "site", "layer", "head", "first_mismatch", "expected", "got")
            entry["first_failure"] = {k: first[k] for k in keys}
        out.append(entry)
    return out


def check_line(entry: dict[str, Any]) -> str:
    """One terminal line for a check's outcome; a failure starts with CHECK FAILED."""
    if entry["status"] == "not_applicable":
        return f"check skipped: {entry['title']} ({entry['note']})"
    if entry["passed"]:
        return f"check passed: {entry['title']} ({entry['prompts']} prompts)"
    first = entry["first_failure"]
    return (
        f"CHECK FAILED: {entry['title']}: {entry['failed']} of {entry['of']} differ "
        f"(first: prompt #{first['prompt_id']}, {first['site']} layer {first['layer']}, "
        f"step {first['first_mismatch']})"
    )


def write_tables(out_dir: Path, tables: dict[str, pl.DataFrame], spec: dict) -> None:
    """Write into a temporary sibling, then swap it in: a directory that exists is complete."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, frame in tables.items():
        frame.write_parquet(tmp / f"{name}.parquet")
    (tmp / "patch.json").write_text(
        json.dumps({"version": 1, "status": "success", **spec}, indent=2)
    )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a non-empty directory that is not an earlier patch output."""
    out_dir = Path(out_dir)
    if out_dir.is_file() or (
        out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "patch.json").is_file()
    ):
        raise HarnessError(f"{out_dir} exists and is not a patch output; choose another --out")
