"""What a run shows on the terminal: one line per stage while it runs, the headline at the end.

Everything else (the libraries' logs, the stages' own messages) goes to ``<run>/log.txt``; see
``harness.pipeline.runner.run_logging``. ``StageBoard`` draws the stage lines: live (updated in
place) on a terminal, one line per finished stage anywhere else (a pipe, a CI log, a test).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from harness.pipeline.stages import PipelineRun

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
MARKS = {
    "done": ("✓", "green"),
    "skipped": ("·", "cyan"),
    "not_applicable": ("-", "dim"),
    "error": ("✗", "bold red"),
}
WORDS = {"done": "done", "skipped": "complete, kept", "not_applicable": "not applicable"}
NAME_WIDTH = 12
INFO_WIDTH = 70


def clock(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def shorten(text: str, width: int = INFO_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class StageLine:
    """The state behind one stage's line; ``done``/``total`` only where the stage reports them."""

    name: str
    state: str = "running"
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None
    done: float | None = None
    total: float | None = None
    info: str = ""
    # where the rate is measured from: a resumed stage starts at its checkpoint, not at 0
    rate_from: tuple[float, float] | None = None

    def elapsed(self) -> float:
        return self.seconds if self.seconds is not None else time.monotonic() - self.started

    def eta(self) -> float | None:
        """Linear from the progress reported so far; None until there is a rate."""
        if self.total is None or self.done is None or self.rate_from is None:
            return None
        done_then, at = self.rate_from
        spent, progressed = time.monotonic() - at, self.done - done_then
        if progressed <= 0 or spent <= 0:
            return None
        return max(self.total - self.done, 0) * spent / progressed

    def text(self) -> Text:
        line = Text()
        if self.state == "running":
            line.append(SPINNER[int(time.monotonic() * 8) % len(SPINNER)], "yellow")
        else:
            mark, style = MARKS.get(self.state, ("?", ""))
            line.append(mark, style)
        line.append(f" {self.name:<{NAME_WIDTH}}", "bold")
        if self.state == "running":
            if self.done is not None:
                count = f"{self.done:g}/{self.total:g}" if self.total else f"{self.done:g}"
                line.append(f" {count}")
            line.append(f"  {clock(self.elapsed())}")
            eta = self.eta()
            if eta is not None:
                line.append(f"  ETA {clock(eta)}")
        elif self.state == "error":
            line.append(f" failed after {clock(self.elapsed())}", "red")
        else:
            line.append(f" {WORDS.get(self.state, self.state)}")
            if self.state == "done":
                line.append(f" in {clock(self.elapsed())}")
        if self.info:
            line.append(f"  {shorten(self.info)}", "dim")
        return line


class StageBoard:
    """The stage lines of a run on ``console`` (the terminal the run started on).

    ``live`` None: live where the console is an interactive terminal. Thread-safe: stage code
    may report progress from a worker thread.
    """

    def __init__(self, console: Console, live: bool | None = None) -> None:
        self.console = console
        if live is None:
            live = console.is_terminal and not console.is_dumb_terminal
        self.lines: dict[str, StageLine] = {}
        self.current: str | None = None
        self._lock = threading.Lock()
        self._live = Live(
            self,
            console=console,
            refresh_per_second=4,
            transient=False,
            redirect_stdout=False,  # the run's output is redirected to log.txt, not here
            redirect_stderr=False,
        ) if live else None  # fmt: skip

    def __rich__(self) -> Group:
        """The live lines, each cut to the terminal's width: a wrapped line would break the
        in-place redraw."""
        with self._lock:
            texts = [line.text() for line in self.lines.values()]
        for text in texts:
            text.no_wrap, text.overflow = True, "ellipsis"
            text.truncate(self.console.width, overflow="ellipsis")
        return Group(*texts)

    def __enter__(self) -> StageBoard:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def start(self, name: str, info: str = "") -> None:
        with self._lock:
            self.lines[name] = StageLine(name, info=info)
            self.current = name
        self._refresh()

    def update(
        self,
        done: float | None = None,
        total: float | None = None,
        info: str | None = None,
        advance: float | None = None,
    ) -> None:
        """Progress of the running stage (ignored when none runs)."""
        with self._lock:
            line = self.lines.get(self.current or "")
            if line is None or line.state != "running":
                return
            if total is not None:
                line.total = total
            if advance is not None:
                done = (line.done or 0) + advance
            if done is not None:
                line.done = done
                if line.rate_from is None:
                    line.rate_from = (done, time.monotonic())
            if info is not None:
                line.info = info
        self._refresh()

    def finish(self, name: str, state: str, seconds: float | None = None, info: str = "") -> None:
        """A stage's last line: done, skipped, not_applicable or error."""
        with self._lock:
            line = self.lines.setdefault(name, StageLine(name))
            line.state, line.info = state, info
            line.seconds = seconds if seconds is not None else line.elapsed()
            if self.current == name:
                self.current = None
        if self._live is None:
            self.console.print(line.text(), soft_wrap=True, highlight=False)
        self._refresh()

    def note(self, text: str, style: str = "yellow") -> None:
        """A line of its own, above the stage lines (something the reader must not miss)."""
        self.console.print(Text(text, style), soft_wrap=True, highlight=False)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()


def _patched_cell(entry: dict) -> str:
    """Patched accuracy at the first and last patched layer, prompts, and where it turns wrong
    (the paper's "Incorrect (layer ~28+)"); the intervals are in the report."""
    first, last = entry.get("first_layer_accuracy"), entry.get("last_layer_accuracy")
    if first is None or last is None:
        return "-"
    cell = (
        f"L{entry['first_layer']} {first:.2f} -> L{entry['last_layer']} {last:.2f}, "
        f"n={entry['prompts']}"
    )
    turn = entry.get("first_incorrect_layer")
    return cell + (f"; wrong from L{turn}+" if turn is not None else "")


def headline(run: PipelineRun) -> Table:
    """The Table 2 figures of a finished run, for the terminal."""
    from harness.report.tables import SUITE_ORDER

    summary = run.summary
    accuracy = summary.get("accuracy", {})
    present = {s for by_suite in accuracy.values() for s in by_suite}
    suites = [s for s in SUITE_ORDER if s in present] + sorted(present - set(SUITE_ORDER))
    table = Table(title=f"{run.run_dir.name}: accuracy per suite")
    table.add_column("condition", style="bold")
    for suite in suites:
        table.add_column(suite, justify="right")
    corrupt = summary.get("corrupt", "corrupt")  # the corrupted model the report leads with
    for model in ("clean", *(m for m in accuracy if m != "clean")):
        values = accuracy.get(model, {})
        table.add_row(model, *(f"{values[s]:.2f}" if s in values else "-" for s in suites))
    flagged = summary.get("patched", {}).get("by_suite", {}).get("flagged", {})
    cells = []
    for suite in suites:
        first = next(iter(flagged.get(suite, {}).values()), None)
        cells.append("-" if first is None else _patched_cell(first))
    table.add_row(f"patched {corrupt} (flagged)" if len(accuracy) > 2 else "patched (flagged)",
                  *cells)  # fmt: skip
    fidelity = (summary.get("fidelity") or {}).get(corrupt)
    verdict = ""
    if fidelity and fidelity.get("n"):
        verdict = (
            f"; corrupted model {fidelity['status']}: {fidelity['trained_error']:.0%} of related "
            f"answers follow a trained error, {fidelity['malformed']:.0%} malformed"
        )
    checks = summary.get("checks_passed")
    check_text = {True: "; checks passed", False: "; CHECKS FAILED", None: ""}[checks]
    table.caption = (
        f"flagged {summary.get('flagged', 0)}, patched prompts "
        f"{summary.get('patched', {}).get('prompts', 0)}{verdict}{check_text}, "
        f"{run.seconds:.0f} s"
    )
    return table
