"""What a finished run prints: the Table 2 figures from its summary.json."""

from __future__ import annotations

from rich.table import Table

from harness.pipeline.stages import PipelineRun
from harness.report.tables import SUITE_ORDER


def headline(run: PipelineRun) -> Table:
    """The Table 2 figures of a finished run, for the terminal."""
    summary = run.summary
    accuracy = summary.get("accuracy", {})
    present = {s for by_suite in accuracy.values() for s in by_suite}
    suites = [s for s in SUITE_ORDER if s in present] + sorted(present - set(SUITE_ORDER))
    table = Table(title=f"{run.run_dir.name}: accuracy per suite")
    table.add_column("condition", style="bold")
    for suite in suites:
        table.add_column(suite, justify="right")
    for model in ("clean", "corrupt"):
        values = accuracy.get(model, {})
        table.add_row(model, *(f"{values[s]:.2f}" if s in values else "-" for s in suites))
    flagged = summary.get("patched", {}).get("by_suite", {}).get("flagged", {})
    cells = []
    for suite in suites:
        sites = flagged.get(suite, {})
        first = next(iter(sites.values()), None)
        if first is None:
            cells.append("-")
            continue
        turn = first["first_incorrect_layer"]
        cells.append(
            f"{first['accuracy']:.2f}" + (f" (wrong from L{turn})" if turn is not None else "")
        )
    table.add_row("patched (flagged)", *cells)
    table.caption = (
        f"flagged {summary.get('flagged', 0)}, patched prompts "
        f"{summary.get('patched', {}).get('prompts', 0)}, {run.seconds:.0f} s"
    )
    return table
