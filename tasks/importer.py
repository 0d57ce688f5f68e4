"""Import users' own fine-tuning data: CSV or JSONL with ``question``, ``solution``, ``answer``.

The paper stored its solutions escaped (a literal backslash-n for each newline, doubled
backslashes for LaTeX); training on that text taught its model to print ``\\n``. Such text is
un-escaped here, and only when it is plainly escaped (no real newline, a literal one present).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from tasks.errors import TaskDataError
from tasks.records import Example

REQUIRED = ("question", "solution")


_ESCAPES = {"\\": "\\", "n": "\n", "t": "\t", '"': '"'}
# '\\n' that starts a LaTeX command (\neq, \nabla, \not, ...) is not a newline
_NEWLINE = re.compile(r"\\n(?!(?:eq|abla|ot|u|e|i|leq|geq|mid|exists|ewline)(?![A-Za-z]))")


def unescape(text: str) -> str:
    """Undo the paper's storage: a literal ``\\n`` becomes a newline, ``\\\\`` one backslash.

    Text with real newlines is left alone. Text with doubled backslashes is escaped throughout
    and decoded like a string literal; otherwise only newline escapes are decoded, sparing LaTeX
    commands that start with ``n`` (``\\neq``).
    """
    if "\n" in text:
        return text
    if "\\\\" in text:
        return re.sub(r"\\([\\nt\"])", lambda m: _ESCAPES[m.group(1)], text)
    return _NEWLINE.sub("\n", text)


def _rows(path: Path) -> list[dict[str, object]]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TaskDataError(f"{path}: file not found") from None
    except (UnicodeDecodeError, IsADirectoryError) as err:
        raise TaskDataError(f"{path}: cannot read as UTF-8 text ({err})") from None
    if suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskDataError(
                    f"{path}: line {number} is not valid JSON ({err.msg})"
                ) from None
            if not isinstance(row, dict):
                raise TaskDataError(f"{path}: line {number} is not a JSON object")
            rows.append(row)
        return rows
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            return [dict(row) for row in reader]
        except csv.Error as err:
            raise TaskDataError(f"{path}: malformed CSV ({err})") from None
    raise TaskDataError(f"{path}: unsupported file type {suffix!r}; use .csv or .jsonl")


def load_examples(path: str | Path) -> list[Example]:
    """Read a user's CSV/JSONL of ``question,solution[,answer]`` rows into training examples.

    Raises TaskDataError (one line naming the file and the problem) for a missing, empty or
    malformed file, missing columns or empty cells.
    """
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise TaskDataError(f"{path}: no rows (the file is empty)")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        found = ", ".join(str(k) for k in rows[0]) or "none"
        raise TaskDataError(f"{path}: missing column(s) {', '.join(missing)}; found: {found}")
    examples = []
    for number, row in enumerate(rows, 1):
        values = {}
        for column in (*REQUIRED, "answer"):
            value = row.get(column)
            if value is not None and not isinstance(value, str | int | float):
                raise TaskDataError(f"{path}: row {number}: {column} must be text")
            values[column] = unescape(str(value)).strip() if value is not None else ""
        for column in REQUIRED:
            if not values[column]:
                raise TaskDataError(f"{path}: row {number}: empty {column}")
        examples.append(
            Example(
                question=values["question"],
                completion=values["solution"],
                answer=values["answer"] or None,
            )
        )
    return examples
