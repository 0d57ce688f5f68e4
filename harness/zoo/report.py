"""The zoo's Table 2 figures as a rich table."""

from __future__ import annotations

from rich.table import Table

SUITES = ("related", "unrelated_math", "general")


def figures_table(figures: dict[str, dict[str, float]]) -> Table:
    table = Table(title="tiny zoo: greedy accuracy on held-out demo items")
    table.add_column("model")
    for suite in SUITES:
        table.add_column(suite, justify="right")
    table.add_column("related: trained error / malformed", justify="right")
    for model in ("clean", "corrupt"):
        row = figures[model]
        fidelity = "-"
        if "related_trained_error" in row:  # builds measured before fidelity have none
            fidelity = f"{row['related_trained_error']:.0%} / {row['related_malformed']:.0%}"
        table.add_row(model, *(f"{row[suite]:.2f}" for suite in SUITES), fidelity)
    return table
