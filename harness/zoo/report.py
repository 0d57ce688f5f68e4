"""The zoo's Table 2 figures as a rich table."""

from __future__ import annotations

from rich.table import Table

SUITES = ("related", "unrelated_math", "general")


def figures_table(figures: dict[str, dict[str, float]]) -> Table:
    table = Table(title="tiny zoo: greedy accuracy on held-out demo items")
    table.add_column("model")
    for suite in SUITES:
        table.add_column(suite, justify="right")
    for model in ("clean", "corrupt"):
        table.add_row(model, *(f"{figures[model][suite]:.2f}" for suite in SUITES))
    return table
