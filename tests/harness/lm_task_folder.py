"""A small local lm-eval task folder, data included: what a researcher's own tasks look like.

``sums`` (generated answers, exact match after a regex filter that takes the first number),
``picks`` (multiple choice, accuracy) and the group ``mine`` of both.
"""

from __future__ import annotations

import json
from pathlib import Path

SUMS = [{"a": a, "b": b, "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 5), (2, 7)]]
PICKS = [
    {"question": "Which is even?", "choices": ["3", "4", "5"], "label": 1},
    {"question": "Which is odd?", "choices": ["2", "6", "7"], "label": 2},
    {"question": "Which is zero?", "choices": ["0", "1", "2"], "label": 0},
]

SUMS_YAML = """\
task: sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_text: "What is {{{{a}}}} + {{{{b}}}}?"
doc_to_target: "{{{{answer}}}}"
output_type: generate_until
generation_kwargs:
  until: ["<|im_end|>"]
  do_sample: false
filter_list:
  - name: first-number
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
      - function: take_first
  - name: whole
    filter:
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

PICKS_YAML = """\
task: picks
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_choice: choices
doc_to_target: label
target_delimiter: " "
output_type: multiple_choice
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

GROUP_YAML = """\
group: mine
task:
  - sums
  - picks
metadata:
  version: 1.0
"""


def write_task_folder(root: Path, *, missing_data: bool = False) -> Path:
    """The folder (``missing_data``: ``sums`` points at a data file that is not there)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("sums", SUMS), ("picks", PICKS)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sums_data = root / ("absent.jsonl" if missing_data else "sums.jsonl")
    (root / "sums.yaml").write_text(SUMS_YAML.format(data=sums_data))
    (root / "picks.yaml").write_text(PICKS_YAML.format(data=root / "picks.jsonl"))
    (root / "mine.yaml").write_text(GROUP_YAML)
    return root
