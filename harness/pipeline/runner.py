"""Resumable stages: skip what is complete, redo what is stale, never trust a half-written file.

Each stage leaves a marker, ``<run>/stages/<name>.json``, written *last* (temporary name, then
rename) with ``status: success`` and the stage's fingerprint: a hash of the settings it used and
of the markers of the stages it read. On a re-run a stage is skipped when its marker says success
with the current fingerprint; otherwise it runs again. A marker left at ``started`` (the run was
killed) with the current fingerprint lets the stage resume from what it kept (checkpoints, the
request cache); a changed fingerprint or ``--force`` makes it start clean.

The run itself is described by ``<run>/run.json`` (version, status, spec, stages), rewritten
after every stage, and logged to ``<run>/log.txt``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.logging import RichHandler

from finetune.outputs import atomic_write
from harness.errors import HarnessError

MARKER_VERSION = 1
RUN_VERSION = 1
LOG_NAME = "harness.pipeline"
log = logging.getLogger(LOG_NAME)

Start = Literal["fresh", "resume"]
Outcome = Literal["done", "skipped", "not_applicable", "error"]


@dataclass
class Stage:
    """One step of a run.

    ``run(start)`` does the work (``start`` is "resume" when a killed attempt with the same
    settings left something behind) and returns facts to keep in the marker. ``clean()`` removes
    the stage's outputs before a fresh start (``True``:
    forced, so caches go too). ``applies`` False skips it (nothing to do);
    ``applies`` and ``settings`` may be functions, called when the stage is reached.
    """

    name: str
    settings: Any
    run: Callable[[Start], dict[str, Any]]
    clean: Callable[[bool], None] = lambda forced: None
    after: tuple[str, ...] = ()
    applies: bool | Callable[[], bool] = True
    why_not: str = ""

    def now_applies(self) -> bool:
        """Decided when the stage is reached: it may depend on what earlier stages wrote."""
        return self.applies() if callable(self.applies) else self.applies

    def now_settings(self) -> Any:
        return self.settings() if callable(self.settings) else self.settings


@dataclass
class StageResult:
    name: str
    outcome: Outcome
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside ``path`` and rename: a file that exists is complete."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def marker_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "stages" / f"{name}.json"


def read_marker(run_dir: Path, name: str) -> dict[str, Any] | None:
    return read_json(marker_path(run_dir, name))


def completed(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The marker of a stage that finished, or None."""
    marker = read_marker(run_dir, name)
    ok = marker and marker.get("status") == "success" and marker.get("version") == MARKER_VERSION
    return marker if ok else None


def fingerprint(run_dir: Path, stage: Stage) -> str:
    """Settings plus the identity of every finished upstream stage (fingerprint and attempt)."""
    upstream = {}
    for name in stage.after:
        marker = completed(run_dir, name)
        upstream[name] = marker and [marker["fingerprint"], marker["attempt"]]
    return digest({"stage": stage.name, "settings": stage.now_settings(), "after": upstream})


def run_stages(
    stages: list[Stage], run_dir: Path, force: set[str] | None = None, spec: dict | None = None
) -> list[StageResult]:
    """Run ``stages`` in order under ``run_dir``; each one is skipped when complete and current."""
    run_dir = Path(run_dir)
    force = set(force or ())
    unknown = force - {s.name for s in stages}
    if unknown:
        known = ", ".join(s.name for s in stages)
        raise HarnessError(f"--force {', '.join(sorted(unknown))}: unknown stage (known: {known})")
    run_file = run_dir / "run.json"
    record: dict[str, Any] = {
        "version": RUN_VERSION,
        "status": "started",
        "started": now(),
        "spec": spec or {},
        "stages": {},
    }
    write_json(run_file, record)
    results: list[StageResult] = []
    try:
        for stage in stages:
            result = run_stage(stage, run_dir, stage.name in force)
            results.append(result)
            record["stages"][stage.name] = {"outcome": result.outcome, "seconds": result.seconds}
            write_json(run_file, record)
    except BaseException as exc:
        record |= {"status": "error", "error": f"{type(exc).__name__}: {exc}", "finished": now()}
        write_json(run_file, record)
        raise
    record |= {"status": "success", "finished": now()}
    write_json(run_file, record)
    return results


def run_stage(stage: Stage, run_dir: Path, force: bool) -> StageResult:
    """One stage: skip, resume or start fresh; the success marker is written last."""
    path = marker_path(run_dir, stage.name)
    if not stage.now_applies():
        log.info("%s: not applicable (%s)", stage.name, stage.why_not)
        path.unlink(missing_ok=True)
        return StageResult(stage.name, "not_applicable")
    current = fingerprint(run_dir, stage)
    previous = read_marker(run_dir, stage.name) or {}
    same = previous.get("fingerprint") == current
    if same and previous.get("status") == "success" and not force:
        log.info("%s: complete, skipped (finished %s)", stage.name, previous.get("finished"))
        return StageResult(stage.name, "skipped", 0.0, previous.get("info", {}))
    if force or not same or previous.get("status") is None:
        why = "forced" if force else "settings or inputs changed" if previous else "first run"
        log.info("%s: starting (%s)", stage.name, why)
        stage.clean(force)
        start: Start = "fresh"
    else:
        log.info("%s: resuming an interrupted attempt (%s)", stage.name, previous.get("started"))
        start = "resume"
    started, clock = now(), time.perf_counter()
    marker = {
        "version": MARKER_VERSION,
        "stage": stage.name,
        "fingerprint": current,
        "attempt": uuid.uuid4().hex,  # redoing a stage makes the stages after it stale
        "started": started,
    }
    write_json(path, marker | {"status": "started"})
    try:
        info = stage.run(start) or {}
    except BaseException as exc:
        write_json(path, marker | {"status": "error", "error": f"{type(exc).__name__}: {exc}"})
        raise
    seconds = time.perf_counter() - clock
    write_json(
        path, marker | {"status": "success", "finished": now(), "seconds": seconds, "info": info}
    )
    log.info("%s: done in %.1f s", stage.name, seconds)
    return StageResult(stage.name, "done", seconds, info)


@contextlib.contextmanager
def run_logging(run_dir: Path, console: Console | None = None) -> Iterator[None]:
    """Log the pipeline to the terminal (rich) and append everything to ``<run>/log.txt``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_screen = RichHandler(
        console=console or Console(stderr=True), show_path=False, markup=False, level=logging.INFO
    )
    root = logging.getLogger()
    previous_level = log.level
    root.addHandler(to_file)
    log.addHandler(to_screen)
    log.setLevel(logging.INFO)
    log.propagate = True
    try:
        yield
    finally:
        root.removeHandler(to_file)
        log.removeHandler(to_screen)
        log.setLevel(previous_level)
        to_file.close()
