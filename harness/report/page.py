"""The report page: sections of HTML around the tables and figures, one self-contained file.

plotly.js is inlined once in the head, so the page opens from disk with no network; every other
figure is a div that calls it.
"""

from __future__ import annotations

import html
from typing import Any

import polars as pl

from harness.report.tables import SUITE_TITLES

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1180px;color:#222;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:4px 9px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}thead th{background:#f4f4f4}
.muted{color:#777}.ok{color:#1a7f37}.bad{color:#c62828}.note{font-size:.9em;color:#555}
.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:10px}
.grid pre,details pre{white-space:pre-wrap;background:#f8f8f8;border:1px solid #e4e4e4;
padding:8px;font-size:.82em;margin:.2em 0;max-height:24em;overflow:auto}
.card{border:1px solid #e0e0e0;border-radius:6px;padding:10px 14px;margin:14px 0}
.tag{display:inline-block;font-size:.78em;padding:1px 7px;border-radius:9px;background:#eef}
.tag.flagged{background:#fde2e2}.tag.control{background:#e2f5e6}
.box{border-radius:6px;padding:8px 14px;margin:14px 0;border:1px solid #ddd}
.box.pass{border-color:#1a7f37;background:#eaf6ec}.box.warn{border-color:#b26a00;background:#fff4e0}
.box.alert{border:3px solid #c62828;background:#fdecea;color:#7f1212}
.box.alert h3{margin:.2em 0;color:#c62828}
.grid2{display:grid;grid-template-columns:repeat(2,1fr);gap:10px}
.grid2 pre{white-space:pre-wrap;background:#fff;border:1px solid #e4e4e4;padding:6px;
font-size:.82em}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def suite_title(suite: str) -> str:
    return SUITE_TITLES.get(suite, suite)


def table(frame: pl.DataFrame, digits: int = 3, headers: dict[str, str] | None = None) -> str:
    """A plain HTML table of a polars frame."""
    headers = headers or {}
    head = "".join(f"<th>{esc(headers.get(c, c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(v, digits)}</td>" for v in row) + "</tr>"
        for row in frame.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def mark(correct: bool | None) -> str:
    if correct is None:
        return '<span class="muted">?</span>'
    return '<span class="ok">✓ correct</span>' if correct else '<span class="bad">✗ wrong</span>'


def verdict_mark(row: dict[str, Any]) -> str:
    """A patched text's verdict; a truncated one says that it hit the token limit."""
    verdict = row.get("verdict")
    if verdict == "truncated":
        n = row.get("n_tokens")
        return f'<span class="bad">✂ truncated ({n} tokens: the limit)</span>'
    if verdict == "unscored":
        return '<span class="muted">? unscored (the checker could not decide)</span>'
    return mark(row.get("correct"))


def figure_div(fig, div_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def document(title: str, sections: list[str]) -> str:
    from plotly.offline import get_plotlyjs

    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{STYLE}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def table2(rows: list[tuple[str, dict[str, str]]], suites: list[str]) -> str:
    """The paper's Table 2: conditions as rows, suites as columns, cells already worded."""
    head = "<th>Model condition</th>" + "".join(f"<th>{esc(suite_title(s))}</th>" for s in suites)
    body = "".join(
        f"<tr><td>{esc(label)}</td>"
        + "".join(f"<td>{cells.get(s, '&ndash;')}</td>" for s in suites)
        + "</tr>"
        for label, cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def generation_card(item: dict[str, Any], patched: pl.DataFrame, shown_layer: int | None) -> str:
    """Clean, corrupted and patched generations of one item side by side; all layers below."""
    chosen = patched.filter(pl.col("layer") == shown_layer) if shown_layer is not None else None
    chosen = chosen.row(0, named=True) if chosen is not None and chosen.height else None
    patched_cell = (
        f"<b>patched, {esc(chosen['site'])} @ layer {chosen['layer']}</b> {verdict_mark(chosen)}"
        f"<pre>{esc(chosen['text'])}</pre>"
        if chosen
        else "<b>patched</b><p class='muted'>not patched</p>"
    )
    layers = "".join(
        f"<p><b>{esc(r['site'])} @ layer {r['layer']}"
        + (f" head {r['head']}" if r["head"] is not None else "")
        + f"</b> {verdict_mark(r)}</p><pre>{esc(r['text'])}</pre>"
        for r in patched.sort("site", "layer", "head", nulls_last=False).iter_rows(named=True)
    )
    return (
        f"<div class='card'><p><span class='tag {esc(item['kind'])}'>{esc(item['kind'])}</span> "
        f"<b>{esc(suite_title(item['suite']))}</b> · {esc(item['task'])} · item "
        f"{esc(item['item_id'])} · prompt #{item['prompt_id']}</p>"
        f"<p><b>Question:</b> {esc(item['question'])}<br><b>Reference:</b> "
        f"{esc(item['reference'])}</p><div class='grid'>"
        f"<div><b>clean</b> {mark(True)}"
        f"<pre>{esc(item['clean_response'])}</pre></div>"
        f"<div><b>corrupted</b> {mark(item['kind'] == 'control')}"
        f"<pre>{esc(item['corrupt_response'])}</pre></div>"
        f"<div>{patched_cell}</div></div>"
        f"<details><summary>every patched layer ({patched.height})</summary>{layers}</details>"
        "</div>"
    )
