"""``harness patch``: format prompts, run CMAP, write prompts/steps/texts parquet files.

The patcher works on token ids; this module owns turning questions into those ids with the
shared prompt format, and the generated ids back into text.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from harness.errors import HarnessError
from tasks.prompt_format import PromptFormat

OUTPUT_FILES = ("prompts.parquet", "steps.parquet", "texts.parquet")


@dataclass(frozen=True)
class PatchOutputs:
    out_dir: Path
    prompts: pl.DataFrame
    steps: pl.DataFrame
    texts: pl.DataFrame


def parse_indices(text: str | None, what: str) -> list[int] | None:
    """``"all"``/None -> None (all of them); ``"0,3,5"`` -> [0, 3, 5]."""
    if text is None or text.strip().lower() == "all":
        return None
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HarnessError(
            f"--{what}: expected 'all' or comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise HarnessError(f"--{what}: no {what} given")
    return values


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


def _column(path: Path) -> list[str]:
    try:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
    except Exception as exc:  # polars raises several types for unreadable files
        raise HarnessError(f"{path}: unreadable ({str(exc).splitlines()[0]})") from None
    for name in ("question", "prompt"):
        if name in frame.columns:
            return frame[name].cast(pl.String).to_list()
    raise HarnessError(f"{path}: no 'question' or 'prompt' column (has: {frame.columns})")


def run_patch(
    clean: str,
    corrupt: str,
    questions: list[str],
    out_dir: Path,
    *,
    site: str = "resid_post",
    layers: list[int] | None = None,
    heads: list[int] | None = None,
    max_new_tokens: int = 256,
    dtype: str = "float32",
    device: str = "cpu",
    mode: str = "transient",
    prompt_format: PromptFormat | None = None,
    trust_remote_code: bool = False,
) -> PatchOutputs:
    """Patch every question at every requested layer; write the three tables atomically."""
    from transformers import AutoTokenizer

    from patchers import load_pair, run_cmap

    prompt_format = prompt_format or PromptFormat()
    check_out_dir(out_dir)
    pair = load_pair(clean, corrupt, dtype=dtype, device=device,
                     trust_remote_code=trust_remote_code)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(clean, trust_remote_code=trust_remote_code)
    prompt_ids = [prompt_format.encode(tokenizer, q) for q in questions]
    eos = {tokenizer.eos_token_id, *_config_eos(pair.clean.config)} - {None}
    result = run_cmap(pair, prompt_ids, site=site, layers=layers, heads=heads,
                      max_new_tokens=max_new_tokens, eos_token_ids=eos, mode=mode)  # fmt: skip
    prompts = pl.DataFrame(
        {"prompt_id": range(len(questions)), "prompt": questions, "prompt_ids": prompt_ids},
        schema={"prompt_id": pl.Int64, "prompt": pl.String, "prompt_ids": pl.List(pl.Int64)},
    )
    texts = result.generations.with_columns(
        pl.Series("text", tokenizer.batch_decode(
            result.generations["token_ids"].to_list(), skip_special_tokens=True)),
    ).select("prompt_id", "site", "layer", "head", "text", "token_ids", "stop")  # fmt: skip
    write_tables(out_dir, {"prompts": prompts, "steps": result.steps, "texts": texts},
                 {"clean": clean, "corrupt": corrupt, "site": site, "mode": mode,
                  "max_new_tokens": max_new_tokens, "dtype": dtype,
                  "prompt_format": prompt_format.model_dump()})  # fmt: skip
    return PatchOutputs(out_dir, prompts, result.steps, texts)


def _config_eos(config) -> list[int]:
    eos = getattr(config, "eos_token_id", None)
    return eos if isinstance(eos, list) else [eos]


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
