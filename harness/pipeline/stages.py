"""``harness run CONFIG``: the stages of an experiment, composed from the packages' functions.

    finetune     finetune.run.finetune_from_config            -> <run>/finetune/
    eval         harness.evaluate.run_eval (clean + corrupt)  -> <run>/eval/
    progression  run_eval on the saved checkpoints (small limit) -> <run>/progression/
    patch        harness.patch.run_patch per site, scored     -> <run>/patch/
    analyze      harness.pipeline.analysis.run_analyze        -> <run>/analyze/
    report       harness.report.build_report                  -> report.html, figures/, summary.json

``<run>/config.yaml`` holds the resolved config; ``run.json``, ``stages/`` and ``log.txt`` are
kept by the runner (``harness.pipeline.runner``).

Each stage names the code its outputs depend on (``*_CODE``, hashed by
``runner.code_version``), so a change there redoes it: the evaluation follows the scorer, the
task files and the evaluation/flagging modules; the patch stage the patcher and the scorer; the
report its package. Fine-tuning follows only the project's version: redoing hours of training
for a refactor would cost more than it protects (``--force finetune`` redoes it).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.config import CORRUPT_NAME, ExperimentConfig
from harness.errors import HarnessError
from harness.pipeline.runner import (
    Stage,
    StageResult,
    atomic_write_text,
    board,
    log,
    progress,
    run_logging,
)
from harness.pipeline.runner import run_stages as run_all

STAGES = ("finetune", "eval", "progression", "patch", "analyze", "report")
PROGRESSION_LIMIT = 20
# The code each stage's outputs come from (modules, packages, files under the project root).
EVAL_CODE = (
    "harness.evaluate",
    "harness.inprocess",
    "harness.lm_models",
    "harness.records",
    "harness.flag",
    "harness.summary",
    "harness.drift",
    "harness.judge",
    "harness.fidelity",
    "harness.lm_tasks",
    "tasks.scoring",
    "tasks.fidelity",
    "tasks.evals.utils",
    "tasks/evals/*.yaml",
    "tasks/evals/*.jsonl",
)
# The patcher's own modules (not patchers.analysis: an analysis change must not redo patching).
PATCHER_MODULES = ("cache", "cmap", "errors", "hooks", "metrics", "models", "names", "reference",
                   "sites", "teacher")  # fmt: skip
PATCHER_CODE = tuple(f"patchers.{name}" for name in PATCHER_MODULES)
# the patch stage also computes Table 2 and the CTS summary (harness.report.stats)
PATCH_CODE = (
    "harness.pipeline.patching",
    "harness.patch",
    "harness.shards",
    "harness.lm_tasks",  # an external task's patched texts are scored by its own metric
    "harness.report.stats",
    *PATCHER_CODE,
    "tasks.scoring",
)
ANALYZE_CODE = (
    "harness.pipeline.analysis",
    "harness.pipeline.analyzer",
    "harness.pipeline.analysis_tables",
    "patchers.analysis",
    *PATCHER_CODE,
    "tasks.scoring",
    "tasks.fidelity",
)
REPORT_CODE = ("harness.report",)


@dataclass
class PipelineRun:
    """What ``run_pipeline`` did: per-stage outcomes, the report and the headline figures."""

    run_dir: Path
    stages: list[StageResult]
    report: Path
    summary: dict
    seconds: float


def _corrupt_refs(cfg: ExperimentConfig) -> dict[str, str]:
    """Name -> resolved reference of every corrupted model the patch stage patches."""
    from harness.endpoints import default_models
    from harness.models import resolve

    refs = default_models(cfg)
    return {name: resolve(refs[name]) for name in cfg.patched_names()}


def patch_dir(cfg: ExperimentConfig, name: str) -> Path:
    """``patch/`` for the one corrupted model, ``patch/<name>/`` for each of several."""
    return cfg.run_dir / "patch" / name if cfg.several else cfg.run_dir / "patch"


def checkpoints(cfg: ExperimentConfig) -> dict[str, Path]:
    """The fine-tuning runs' complete checkpoints, oldest first, by model name: ``step-N``, or
    ``<variant>-step-N`` for several."""
    found = {}
    for name in cfg.corrupt_names():
        root = cfg.finetune_dir(name) / "checkpoints"
        for path in sorted(p.parent for p in root.glob("step-*/checkpoint.json")):
            found[f"{name}-{path.name}" if cfg.finetune.variants else path.name] = path
    return found


class _TrainingBar:
    """Stands in for fine-tuning's own rich progress bar during a run: its steps become the
    stage line's done/total and its loss the line's news (a terminal has room for one live
    display, and its evaluation lines belong in log.txt)."""

    def __init__(self, enabled: bool = True) -> None:
        self.console = self

    def __enter__(self) -> _TrainingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **fields: object) -> int:  # fmt: skip
        progress(done=completed, total=total)
        return 0

    def update(self, task: int, advance: float | None = None, completed: float | None = None,
               info: str | None = None, **fields: object) -> None:  # fmt: skip
        progress(done=completed, advance=advance, info=info)

    def print(self, *objects: object, **kwargs: object) -> None:
        stage = getattr(board(), "current", None) or "finetune"
        log.info("%s: %s", stage, " ".join(str(o) for o in objects))


@contextlib.contextmanager
def training_progress() -> Iterator[None]:
    """Fine-tuning's progress bar on the run's board (only while a run's board is shown)."""
    from finetune import train

    if not hasattr(board(), "lines"):  # outside a run: keep fine-tuning's own bar
        yield
        return
    original = train.progress_bar
    train.progress_bar = _TrainingBar  # type: ignore[assignment]
    try:
        yield
    finally:
        train.progress_bar = original


def finetune_stage(cfg: ExperimentConfig) -> Stage:
    """Fine-tune the clean model into each corrupted one: the recipe, or each of its variants
    (one after another; on resume a variant that finished is kept)."""

    def run(start: str) -> dict:
        from finetune.outputs import completed_run
        from finetune.run import finetune_from_config, latest_checkpoint
        from harness.models import resolve

        recipes = cfg.finetune.variant_recipes() or {CORRUPT_NAME: cfg.finetune}
        facts = {}
        for name, settings in recipes.items():
            out = cfg.finetune_dir(name)
            result = completed_run(out) if start == "resume" else None
            if result is not None:
                log.info("finetune: %s is complete, kept", name)
            else:
                resume = latest_checkpoint(out) if start == "resume" else None
                if resume:
                    log.info("finetune: %s resuming from %s", name, resume)
                    settings = settings.model_copy(update={"resume_from": str(resume)})
                with training_progress():
                    result = finetune_from_config(
                        settings,
                        resolve(cfg.models.clean),
                        cfg.prompt,
                        out,
                        trust_remote_code=cfg.models.trust_remote_code,
                    )
                if completed_run(out) is None:
                    raise HarnessError(f"{out}: fine-tuning ended without its finetune.json")
            facts[name] = {
                "steps": result.steps,
                "train_loss": result.train_loss,
                "eval_loss": result.eval_loss,
                "divergence": result.divergence,
                "model_dir": result.model_dir,
            }
        return facts[CORRUPT_NAME] if list(facts) == [CORRUPT_NAME] else {"variants": facts}

    def describe(info: dict) -> str:
        if "variants" not in info:
            return (f"{info['steps']} steps, train loss {info['train_loss']:.3f}, "
                    f"eval loss {info['eval_loss']:.3f}")  # fmt: skip
        return ", ".join(
            f"{name} {v['steps']} steps (train loss {v['train_loss']:.3f})"
            for name, v in info["variants"].items()
        )

    return Stage(
        "finetune",
        settings={
            "finetune": cfg.finetune.model_dump(mode="json"),
            "clean": cfg.models.clean,
            "prompt": cfg.prompt.model_dump(mode="json"),
        },
        run=run,
        clean=lambda forced: shutil.rmtree(cfg.run_dir / "finetune", ignore_errors=True),
        applies=cfg.finetune.enabled,
        why_not="models.corrupt is given",
        describe=describe,
    )


def eval_stage(cfg: ExperimentConfig) -> Stage:
    out = cfg.run_dir / "eval"

    def run(start: str) -> dict:
        from harness.evaluate import run_eval

        if start == "resume":
            log.info("eval: the lm-eval request cache keeps the answers already computed")
        result = run_eval(cfg, out_dir=out, progress=progress)
        return {"flagged": result.flagged.height, "seconds": result.seconds}

    def clean(forced: bool) -> None:
        """A fresh start keeps lm-eval's request cache (keyed by model and request), unless
        forced: a changed limit or suite list then reuses the answers it already has."""
        if forced or not out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
            return
        for path in out.iterdir():
            if path.is_dir() and path.name != "cache":
                shutil.rmtree(path)
            elif path.is_file():
                path.unlink()

    return Stage(
        "eval",
        settings={
            "eval": cfg.eval.model_dump(mode="json"),
            "models": cfg.models.model_dump(mode="json"),
            "prompt": cfg.prompt.model_dump(mode="json"),
        },
        run=run,
        clean=clean,
        after=("finetune",),
        code=EVAL_CODE,
        describe=lambda info: f"{info['flagged']} flagged",
    )


def progression_stage(cfg: ExperimentConfig, limit: int) -> Stage:
    """Suite accuracies of the saved checkpoints: how the corruption set in along training."""
    out = cfg.run_dir / "progression"

    def run(start: str) -> dict:
        from finetune.outputs import completed_run
        from harness.evaluate import run_eval

        small_limit = min(cfg.eval.limit or limit, limit)
        small = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"limit": small_limit})})
        models = {"clean": cfg.models.clean} | {n: str(p) for n, p in checkpoints(cfg).items()}
        for name in cfg.corrupt_names():
            final = completed_run(cfg.finetune_dir(name))
            if final is not None:
                prefix = f"{name}-" if cfg.finetune.variants else ""
                models[f"{prefix}step-{final.steps:06d}"] = final.model_dir
        result = run_eval(small, models, out_dir=out, progress=progress)
        return {"models": list(models), "limit": small_limit, "seconds": result.seconds}

    return Stage(
        "progression",
        settings=lambda: {
            "eval": cfg.eval.model_dump(mode="json"),
            "limit": limit,
            "checkpoints": list(checkpoints(cfg)),
        },
        run=run,
        clean=lambda forced: shutil.rmtree(out, ignore_errors=True),
        after=("finetune",),
        applies=lambda: cfg.finetune.enabled and limit > 0 and bool(checkpoints(cfg)),
        why_not="no saved checkpoints to evaluate (finetune.save_every sets them)",
        code=EVAL_CODE,
        describe=lambda info: f"{len(info['models'])} models, {info['limit']} items per task",
    )


def patch_stage(cfg: ExperimentConfig) -> Stage:
    """Patch each corrupted model's flagged items (``patch.corrupt``: one of them)."""

    def run(start: str) -> dict:
        from harness.errors import ConfigError
        from harness.models import resolve
        from harness.pipeline.patching import run_patch_stage
        from harness.preflight import patch_problems

        clean = resolve(cfg.models.clean)
        problems = patch_problems(cfg, clean)  # before the pair loads
        if problems:
            raise ConfigError("; ".join(problems))
        facts = {}
        for name, ref in _corrupt_refs(cfg).items():
            where = f"patch {name}" if cfg.several else "patch"
            say = lambda text, where=where: log.info("%s: %s", where, text)  # noqa: E731
            facts[name] = run_patch_stage(
                cfg, clean, ref, cfg.run_dir / "eval", patch_dir(cfg, name), say=say, model=name
            )
        return facts[CORRUPT_NAME] if list(facts) == [CORRUPT_NAME] else {"models": facts}

    def describe(info: dict) -> str:
        each = info.get("models") or {"": info}
        return "; ".join(
            f"{name + ': ' if name else ''}{f['prompts']} prompts ({f['flagged']} flagged), "
            f"{f['trajectories']} trajectories"
            for name, f in each.items()
        )

    return Stage(
        "patch",
        settings={
            "patch": cfg.patch.result_settings(),
            "prompt": cfg.prompt.model_dump(mode="json"),
        },
        run=run,
        clean=lambda forced: shutil.rmtree(cfg.run_dir / "patch", ignore_errors=True),
        after=("finetune", "eval"),
        applies=cfg.patch.enabled,
        why_not="patch.enabled is false",
        code=PATCH_CODE,
        describe=describe,
    )


def analyze_stage(cfg: ExperimentConfig) -> Stage:
    out = cfg.run_dir / "analyze"

    def run(start: str) -> dict:
        from harness.models import resolve
        from harness.pipeline.analysis import run_analyze

        say = lambda text: log.info("analyze: %s", text)  # noqa: E731
        name, corrupt = next(iter(_corrupt_refs(cfg).items()))  # the first patched model
        patched = patch_dir(cfg, name)
        summary = run_analyze(
            cfg, resolve(cfg.models.clean), corrupt, out, say=say, patch_dir=patched
        )
        return {"items": summary["items"], "seconds": summary["seconds"]}

    return Stage(
        "analyze",
        settings={
            "analyze": cfg.analyze.model_dump(mode="json"),
            "patch": cfg.patch.result_settings(),
            "prompt": cfg.prompt.model_dump(mode="json"),
        },
        run=run,
        clean=lambda forced: shutil.rmtree(out, ignore_errors=True),
        after=("finetune", "eval", "patch"),
        applies=cfg.analyze.enabled and cfg.patch.enabled,
        why_not="analyze.enabled (or patch.enabled) is false",
        code=ANALYZE_CODE,
        describe=lambda info: (
            f"{info['items']} items, {sum(info['seconds'].values()):.0f} s "
            f"({', '.join(info['seconds'])})"
        ),
    )


def report_stage(cfg: ExperimentConfig) -> Stage:
    def run(start: str) -> dict:
        from harness.report import build_report

        built = build_report(cfg.run_dir)
        return {"report": str(built.html), "figures": [str(p) for p in built.figures]}

    return Stage(
        "report",
        settings={"version": 1},
        run=run,
        after=("finetune", "eval", "progression", "patch", "analyze"),
        code=REPORT_CODE,
        describe=lambda info: f"{len(info['figures'])} figures",
    )


def write_config(cfg: ExperimentConfig) -> Path:
    """``<run>/config.yaml``: the resolved config, every default filled in."""
    path = cfg.run_dir / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def run_pipeline(
    cfg: ExperimentConfig,
    force: list[str] | None = None,
    until: str | None = None,
    progression_limit: int = PROGRESSION_LIMIT,
    verbose: bool = False,
) -> PipelineRun:
    """Run (or resume) the stages of an experiment, all of them or up to ``until``.

    ``force`` names stages to redo even if complete (the stages after them follow, since their
    inputs change). ``progression_limit`` caps the documents per task of the checkpoint
    evaluation (0 turns it off). Everything that can be checked without weights is checked
    first (``harness.preflight``). The terminal shows one line per stage; the details go to
    ``<run>/log.txt`` (``verbose``: to the terminal too).
    """
    from harness.evaluate import git_commit
    from harness.preflight import check_experiment

    check_experiment(cfg, force=force or (), until=until, stages=STAGES)
    started = time.perf_counter()
    run_dir = cfg.run_dir
    with run_logging(run_dir, verbose=verbose) as display:
        log.info("run %s -> %s", cfg.name, run_dir)
        display.note(f"run {cfg.name}: {run_dir} (details in {run_dir / 'log.txt'})", "dim")
        write_config(cfg)
        stages = [finetune_stage(cfg), eval_stage(cfg)]
        stages += [progression_stage(cfg, progression_limit), patch_stage(cfg)]
        stages += [analyze_stage(cfg), report_stage(cfg)]
        if until is not None:
            stages = stages[: STAGES.index(until) + 1]
        spec = {"name": cfg.name, "config": "config.yaml", "commit": git_commit()}
        results = run_all(stages, run_dir, set(force or ()), spec)
        seconds = time.perf_counter() - started
        log.info("finished in %.0f s", seconds)
    summary = _read_summary(run_dir)
    return PipelineRun(run_dir, results, run_dir / "report.html", summary, seconds)


def _read_summary(run_dir: Path) -> dict:
    from harness.pipeline.runner import read_json

    return read_json(run_dir / "summary.json") or {}
