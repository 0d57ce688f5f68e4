"""Resumable stages: skip what is complete, redo what is stale, never trust a half-written file.

Each stage leaves a marker, ``<run>/stages/<name>.json``, written *last* (temporary name, then
rename) with ``status: success`` and the stage's fingerprint: a hash of the settings it used and
of the markers of the stages it read. On a re-run a stage is skipped when its marker says success
with the current fingerprint; otherwise it runs again. A marker left at ``started`` (the run was
killed) with the current fingerprint lets the stage resume from what it kept (checkpoints, the
request cache); a changed fingerprint or ``--force`` makes it start clean.

Every marker also records the code that made the outputs (``code``): the project's version
(``cmap-harness`` from its package metadata) and, for a stage whose outputs depend on code (the
scorer, the patcher, the report), a hash of that code (``code_version``). Both are part of the
fingerprint, so after a scorer fix a "complete" evaluation is redone rather than kept, and the
run says so: one line on the terminal and ``from_other_version`` in ``run.json``.

The run itself is described by ``<run>/run.json`` (version, status, spec, stages), rewritten
after every stage. The terminal shows one line per stage (``harness.pipeline.console``); the
stages' messages and every library's logs and progress bars go to ``<run>/log.txt``
(``run_logging``; ``verbose`` also echoes them to the terminal).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TextIO

from rich.console import Console
from rich.logging import RichHandler

from finetune.outputs import atomic_write
from harness.errors import HarnessError
from harness.pipeline.console import StageBoard

MARKER_VERSION = 2  # 2: markers record the code that made the outputs
RUN_VERSION = 1
LOG_NAME = "harness.pipeline"
PROJECT = "cmap-harness"
log = logging.getLogger(LOG_NAME)  # the stages' messages: log.txt, and the stage line's news
runner_log = logging.getLogger(f"{LOG_NAME}.runner")  # the runner's own: log.txt only
# packages whose modules a stage's code hash follows through their imports
CODE_PACKAGES = ("tasks", "patchers")

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
    ``code``: the modules (``tasks.scoring``) and data files (``tasks/evals/*.yaml``, relative
    to the project root) its outputs depend on; see ``code_version``. ``describe`` turns the
    returned facts into the few words of the stage's finished line.
    """

    name: str
    settings: Any
    run: Callable[[Start], dict[str, Any]]
    clean: Callable[[bool], None] = lambda forced: None
    after: tuple[str, ...] = ()
    applies: bool | Callable[[], bool] = True
    why_not: str = ""
    code: tuple[str, ...] = ()
    describe: Callable[[dict[str, Any]], str] | None = None

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
    other_version: dict[str, Any] | None = None  # {"was": code, "now": code} when redone


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


def project_version() -> str:
    """The installed project's version (pyproject ``version``, as pip recorded it)."""
    try:
        return metadata.version(PROJECT)
    except metadata.PackageNotFoundError:
        return "unknown"


def _module_files(name: str, whole: bool = True) -> dict[str, Path]:
    """The source file of a module, or of every module of a package (``whole``; else its
    ``__init__``), by module name; found without importing anything (a package's ``__init__``
    may import torch)."""
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.submodule_search_locations:
        return {top: Path(spec.origin)} if spec and spec.origin and not rest else {}
    root = Path(next(iter(spec.submodule_search_locations)))
    base = root.joinpath(*rest)
    if base.is_dir():
        paths = sorted(base.rglob("*.py")) if whole else [base / "__init__.py"]
    else:
        paths = [base.with_suffix(".py")]
    found = {}
    for path in paths:
        if path.is_file():
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(module: str, path: Path, tree: ast.Module) -> set[str]:
    """The modules of ``CODE_PACKAGES`` a file imports (anywhere in it: lazy imports count)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parent = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parent, node.module] if node.module else parent)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from tasks import x`
    return {name for name in found if name.split(".")[0] in CODE_PACKAGES}


def _syntax(tree: ast.Module) -> str:
    """The code of a module without its docstrings: comments, docstrings and formatting do
    not change a stage's code version, code does."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        value = first.value if isinstance(first, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def code_version(entries: Iterable[str], root: Path | None = None) -> str | None:
    """A hash of the code a stage's outputs come from; None when it names none.

    An entry is a module or package (``tasks.scoring``, ``harness.report``) or a file glob
    relative to the project root (``tasks/evals/*.yaml``). A module counts by its syntax tree
    (docstrings, comments and formatting left out), together with every module of the
    ``tasks`` and ``patchers`` packages it imports, directly or not (the scorer's parsers, the
    patcher's hooks); a data file counts by its bytes. So editing the scorer changes the eval
    stage's version, and rewording its docstring does not.
    """
    entries = list(entries)
    if not entries:
        return None
    root = root or Path(__file__).resolve().parents[2]
    files = {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for pattern in entries
        if "/" in pattern
        for path in sorted(root.glob(pattern))
        if path.is_file()
    }
    return digest({"modules": _module_hashes(entries), "files": files})


def code_modules(entries: Iterable[str]) -> list[str]:
    """The modules ``code_version`` hashes for ``entries``, imports followed."""
    return sorted(_module_hashes(entries))


def _module_hashes(entries: Iterable[str]) -> dict[str, str]:
    todo = [(e, True) for e in entries if "/" not in e]
    seen: dict[str, str] = {}
    while todo:
        for module, path in _module_files(*todo.pop()).items():
            if module in seen:
                continue
            try:
                tree = ast.parse(path.read_bytes())
            except (OSError, SyntaxError, ValueError):
                seen[module] = "unreadable"
                continue
            todo += [(name, False) for name in sorted(_imports(module, path, tree))]
            seen[module] = hashlib.sha256(_syntax(tree).encode()).hexdigest()
    return seen


def stage_code(stage: Stage) -> dict[str, str | None]:
    """What a stage's marker records about the code that made its outputs."""
    return {"project": project_version(), "stage": code_version(stage.code)}


def describe_code(code: dict[str, Any] | None) -> str:
    if not code:
        return "a version that recorded none"
    stage = code.get("stage")
    return f"{PROJECT} {code.get('project')}" + (f", code {stage[:8]}" if stage else "")


def marker_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "stages" / f"{name}.json"


def read_marker(run_dir: Path, name: str) -> dict[str, Any] | None:
    return read_json(marker_path(run_dir, name))


def completed(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The marker of a stage that finished, or None."""
    marker = read_marker(run_dir, name)
    ok = marker and marker.get("status") == "success" and marker.get("version") == MARKER_VERSION
    return marker if ok else None


def fingerprint(run_dir: Path, stage: Stage, code: dict[str, Any] | None = None) -> str:
    """Settings, code (``stage_code``) and the identity of every finished upstream stage
    (fingerprint and attempt)."""
    upstream = {}
    for name in stage.after:
        marker = completed(run_dir, name)
        upstream[name] = marker and [marker["fingerprint"], marker["attempt"]]
    code = code if code is not None else stage_code(stage)
    return digest(
        {"stage": stage.name, "settings": stage.now_settings(), "after": upstream, "code": code}
    )


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
        "code": {"project": project_version()},
        "spec": spec or {},
        "stages": {},
    }
    write_json(run_file, record)
    results: list[StageResult] = []
    try:
        for stage in stages:
            result = run_stage(stage, run_dir, stage.name in force)
            results.append(result)
            entry = {"outcome": result.outcome, "seconds": result.seconds}
            if result.other_version is not None:
                entry["from_other_version"] = result.other_version
            record["stages"][stage.name] = entry
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
    display = board()
    if not stage.now_applies():
        runner_log.info("%s: not applicable (%s)", stage.name, stage.why_not)
        path.unlink(missing_ok=True)
        display.finish(stage.name, "not_applicable", 0.0, stage.why_not)
        return StageResult(stage.name, "not_applicable")
    code = stage_code(stage)
    current = fingerprint(run_dir, stage, code)
    previous = read_marker(run_dir, stage.name) or {}
    same = previous.get("fingerprint") == current
    if same and previous.get("status") == "success" and not force:
        runner_log.info("%s: complete, skipped (finished %s)", stage.name, previous.get("finished"))
        info = previous.get("info", {})
        display.finish(stage.name, "skipped", 0.0, _describe(stage, info))
        return StageResult(stage.name, "skipped", 0.0, info)
    other = None
    if previous and previous.get("code") != code:
        other = {"was": previous.get("code"), "now": code}
        display.note(
            f"{stage.name}: its outputs were made by {describe_code(previous.get('code'))}, "
            f"this is {describe_code(code)}: redoing the stage"
        )
    if force or not same or previous.get("status") is None:
        why = "first run"
        if force:
            why = "forced"
        elif other:
            why = "made by another version"
        elif previous:
            why = "settings or inputs changed"
        runner_log.info("%s: starting (%s)", stage.name, why)
        stage.clean(force)
        start: Start = "fresh"
    else:
        runner_log.info(
            "%s: resuming an interrupted attempt (%s)", stage.name, previous.get("started")
        )
        start = "resume"
    started, clock = now(), time.perf_counter()
    marker = {
        "version": MARKER_VERSION,
        "stage": stage.name,
        "fingerprint": current,
        "code": code,
        "attempt": uuid.uuid4().hex,  # redoing a stage makes the stages after it stale
        "started": started,
    }
    write_json(path, marker | {"status": "started"})
    display.start(stage.name, "resuming" if start == "resume" else "")
    try:
        info = stage.run(start) or {}
    except BaseException as exc:
        seconds = time.perf_counter() - clock
        write_json(path, marker | {"status": "error", "error": f"{type(exc).__name__}: {exc}"})
        runner_log.error("%s: failed after %.1f s", stage.name, seconds, exc_info=True)
        where = f" (details: {run_dir / 'log.txt'})" if _ACTIVE else ""
        display.finish(stage.name, "error", seconds, f"{type(exc).__name__}{where}")
        raise
    seconds = time.perf_counter() - clock
    write_json(
        path, marker | {"status": "success", "finished": now(), "seconds": seconds, "info": info}
    )
    runner_log.info("%s: done in %.1f s", stage.name, seconds)
    display.finish(stage.name, "done", seconds, _describe(stage, info))
    return StageResult(stage.name, "done", seconds, info, other)


def _describe(stage: Stage, info: dict[str, Any]) -> str:
    if stage.describe is None or not info:
        return ""
    try:
        return stage.describe(info)
    except (KeyError, TypeError, ValueError):  # an older marker's facts: say nothing
        return ""


# -- what the terminal shows, and where everything else goes -------------------------------


class _Quiet:
    """A stand-in board for code run outside ``run_logging`` (tests, the API): draws nothing."""

    def start(self, *args: Any, **kwargs: Any) -> None: ...
    def update(self, *args: Any, **kwargs: Any) -> None: ...
    def finish(self, *args: Any, **kwargs: Any) -> None: ...
    def note(self, *args: Any, **kwargs: Any) -> None: ...


_ACTIVE: list[StageBoard] = []


def board() -> StageBoard | _Quiet:
    """The board of the run in progress (a silent one outside ``run_logging``)."""
    return _ACTIVE[-1] if _ACTIVE else _Quiet()


def progress(
    done: float | None = None,
    total: float | None = None,
    info: str | None = None,
    advance: float | None = None,
) -> None:
    """For stage code: how far the running stage is (its terminal line shows done/total and
    an ETA) and what it is doing; a no-op outside a run."""
    board().update(done=done, total=total, info=info, advance=advance)


@contextlib.contextmanager
def step(name: str, describe: Callable[[], str] | None = None) -> Iterator[None]:
    """A line on the board for work that is not a stage (the demo's zoo build)."""
    display, clock = board(), time.perf_counter()
    display.start(name)
    try:
        yield
    except BaseException as exc:
        display.finish(name, "error", time.perf_counter() - clock, type(exc).__name__)
        raise
    display.finish(name, "done", time.perf_counter() - clock, describe() if describe else "")


class _News(logging.Handler):
    """The stages' own messages, shown as the running stage's latest news on its line; their
    warnings (a failed sanity check) get a line of their own."""

    def __init__(self, display: StageBoard) -> None:
        super().__init__(logging.INFO)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == runner_log.name or not record.name.startswith(FIRST_PARTY):
            return
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not break the run
            return
        if record.levelno >= logging.WARNING:
            self.display.note(message, "bold red" if record.levelno >= logging.ERROR else "yellow")
            return
        current = self.display.current
        if current and message.startswith(f"{current}: "):
            message = message.removeprefix(f"{current}: ")
        self.display.update(info=message.splitlines()[0] if message else "")


FIRST_PARTY = ("harness", "finetune", "tasks", "patchers")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Set while a run is quiet (before the libraries are imported, they read these then): no
# progress bars, tokenizers' fork warning off. vLLM keeps its own logging; it goes to log.txt.
QUIET_ENV = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def quiet_environment(verbose: bool = False) -> dict[str, str | None]:
    """Set ``QUIET_ENV`` where unset (all but the progress bars with ``verbose``); returns the
    previous values for ``restore_environment``."""
    chosen = {"TOKENIZERS_PARALLELISM": "false"} if verbose else QUIET_ENV
    previous = {key: os.environ.get(key) for key in chosen}
    for key, value in chosen.items():
        os.environ.setdefault(key, value)
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def _library_bars_off() -> Iterator[None]:
    """Progress bars of libraries imported before the run (the environment variables work only
    before import): off for the run, as they were after it."""
    switches = []
    for name in ("transformers", "datasets"):  # the same logging utilities in both
        module = sys.modules.get(name)
        if module is not None:
            bars = module.utils.logging
            switches.append(
                (bars.is_progress_bar_enabled(), bars.disable_progress_bar,
                 bars.enable_progress_bar)
            )  # fmt: skip
    for enabled, off, _ in switches:
        if enabled:
            off()
    try:
        yield
    finally:
        for enabled, _, on in switches:
            if enabled:
                on()


class _Redirect(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` during a run: into log.txt (and the terminal, ``echo``).

    After the run it writes where the stream wrote before: a library that kept a reference
    (vLLM's log handler keeps ``sys.stdout``) goes on working.
    """

    def __init__(self, target: TextIO, echo: TextIO | None) -> None:
        self.target, self.echo = target, echo

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for stream in (self.target, self.echo):
            if stream is not None:
                with contextlib.suppress(ValueError, OSError):
                    stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in (self.target, self.echo):
            if stream is not None:
                with contextlib.suppress(ValueError, OSError):
                    stream.flush()

    def isatty(self) -> bool:
        return False


def _real_fd(stream: Any, expected: int) -> bool:
    """Whether ``stream`` writes to file descriptor ``expected`` (not a test's capture)."""
    try:
        return stream.fileno() == expected
    except (AttributeError, OSError, ValueError):
        return False


def _terminal_file() -> tuple[TextIO, bool]:
    """Where the stage lines go: the terminal stderr as it is now (a copy of its descriptor,
    so redirecting fd 2 into log.txt leaves it alone). Returns it and whether we opened it."""
    stream = sys.stderr
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream, False
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace"), True


@contextlib.contextmanager
def _descriptors_to(log_fd: int, echo_fd: int | None) -> Iterator[None]:
    """Point fds 1 and 2 at log.txt (native code, child processes: vLLM's engine core), or,
    with ``echo_fd``, at a pipe copied to both log.txt and the terminal."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = {}
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            saved[fd] = os.dup(fd)
    copier = None
    if echo_fd is None:
        target = log_fd
    else:
        read_end, target = os.pipe()

        def copy() -> None:
            while chunk := os.read(read_end, 65536):
                for out in (log_fd, echo_fd):
                    with contextlib.suppress(OSError):
                        os.write(out, chunk)
            os.close(read_end)

        copier = threading.Thread(target=copy, name="log-tee", daemon=True)
        copier.start()
    try:
        for fd in saved:
            os.dup2(target, fd)
        if copier is not None:
            os.close(target)  # the copier ends when the last writer (fds 1, 2, children) closes
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy_of in saved.items():
            os.dup2(copy_of, fd)
            os.close(copy_of)
        if copier is not None:
            copier.join(timeout=2.0)  # a child that outlives the run may keep the pipe open


def _route_to_root() -> list[tuple[logging.Logger, list[logging.Handler]]]:
    """Loggers that keep their records to themselves (vLLM configures ``vllm`` with its own
    stream handler and ``propagate=False``) send them to the root for the run instead, so they
    reach log.txt wherever their handler's stream points; returns what to restore."""
    detached = []
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and not logger.propagate:
            detached.append((logger, list(logger.handlers)))
            for handler in logger.handlers:
                logger.removeHandler(handler)
            logger.propagate = True
    return detached


def _restore_routes(detached: list[tuple[logging.Logger, list[logging.Handler]]]) -> None:
    for logger, own in detached:
        logger.propagate = False
        for handler in own:
            logger.addHandler(handler)


@contextlib.contextmanager
def run_logging(
    run_dir: Path, console: Console | None = None, verbose: bool = False
) -> Iterator[StageBoard]:
    """A quiet run: the stage lines on the terminal, everything else in ``<run>/log.txt``.

    Into log.txt go the pipeline's and the stages' messages, every library's log records (the
    root logger at INFO), whatever is written to ``sys.stdout``/``sys.stderr`` (progress bars,
    warnings) and, at the file-descriptor level, what native code and child processes write
    (vLLM's engine). The terminal keeps the stage lines (``StageBoard`` on ``console``, by
    default the stderr the run started with). ``verbose`` echoes all of it to the terminal too.
    Nested calls (the demo wraps the pipeline) share the outer run's board and log.
    """
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous_env = quiet_environment(verbose)
    terminal, opened = (console.file, False) if console is not None else _terminal_file()
    console = console or Console(file=terminal, highlight=False)
    stream = (run_dir / "log.txt").open("a", buffering=1, encoding="utf-8", errors="replace")
    to_file = logging.StreamHandler(stream)
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    display = StageBoard(console, live=False if verbose else None)
    handlers: list[logging.Handler] = [to_file, _News(display)]
    if verbose:
        handlers.append(RichHandler(console=console, show_path=False, markup=False))
    root = logging.getLogger()
    levels = (root.level, log.level)
    detached = _route_to_root()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    log.setLevel(logging.INFO)
    redirects = [
        (name, getattr(sys, name))
        for name, fd in (("stdout", 1), ("stderr", 2))
        if not _real_fd(getattr(sys, name), fd)
    ]
    proxies = {name: _Redirect(stream, old if verbose else None) for name, old in redirects}
    echo_fd = terminal.fileno() if verbose and opened else None
    try:
        # fd-level: always when quiet; with verbose only where the terminal is a real fd
        fds = (
            _descriptors_to(stream.fileno(), echo_fd)
            if not verbose or echo_fd is not None
            else contextlib.nullcontext()
        )
        bars = _library_bars_off() if not verbose else contextlib.nullcontext()
        with fds, bars, display:
            for name, proxy in proxies.items():
                setattr(sys, name, proxy)
            _ACTIVE.append(display)
            try:
                yield display
            except BaseException:
                runner_log.error("the run stopped", exc_info=True)
                raise
            finally:
                _ACTIVE.pop()
                for name, old in redirects:
                    setattr(sys, name, old)
                    proxies[name].target, proxies[name].echo = old, None
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        _restore_routes(detached)
        root.setLevel(levels[0])
        log.setLevel(levels[1])
        restore_environment(previous_env)
        stream.close()
        if opened:
            terminal.close()
