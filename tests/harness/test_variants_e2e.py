"""`harness run configs/demo.yaml` with two fine-tuned variants of its corrupting recipe (one
and two epochs) and a local lm-eval task folder, on a few items: one engine evaluates every
model, each variant is patched, the report shows Table 1 and a Table 2 per variant. About 4
minutes (two fine-tunings, one vLLM engine, two patch runs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.harness.lm_task_folder import write_task_folder

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "demo.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_two_variants_and_an_external_task_run_end_to_end(tmp_path, zoo):
    folder = write_task_folder(tmp_path / "tasks")
    out = tmp_path / "results"
    settings = {
        "name": "variants",
        "output_dir": str(out),
        "finetune.save_every": "null",  # no checkpoints: the progression stage is not the point
        "finetune.data.n_train": "96",  # the variants' steps are the point, not their quality
        "finetune.variants": "{short: {epochs: 1}, long: {epochs: 2}}",
        "eval.limit": "4",
        "eval.tasks": "[mine]",
        "eval.include_paths": f"[{folder}]",
        "patch.max_prompts_per_suite": "2",
        "patch.max_controls_per_suite": "1",
        "patch.check_prompts": "2",
        "analyze.enabled": "false",
    }
    overrides = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(CONFIG), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = out / "variants"
    steps = {}
    for name in ("short", "long"):
        tuned = json.loads((run / "finetune" / name / "finetune.json").read_text())
        assert tuned["status"] == "success"
        steps[name] = tuned["steps"]
        assert (run / "patch" / name / "table2.parquet").is_file()
        assert json.loads((run / "patch" / name / "run.json").read_text())["model"] == name
    summary = pl.read_parquet(run / "eval" / "summary.parquet")
    assert set(summary["model"]) == {"clean", "short", "long"}
    assert set(summary["suite"]) == {"related", "unrelated_math", "general", "mine"}
    records = pl.read_parquet(run / "eval" / "records.parquet").filter(pl.col("suite") == "mine")
    assert records.group_by("model").len().sort("model").rows() == [
        ("clean", 7),
        ("long", 7),
        ("short", 7),
    ]  # 4 sums, 3 picks
    headline = json.loads((run / "summary.json").read_text())
    table1 = {row["model"]: row for row in headline["table1"]}
    assert set(table1) == {"short", "long"}
    assert table1["long"]["steps"] == 2 * table1["short"]["steps"] == 2 * steps["short"]
    assert table1["long"]["epochs"] == 2
    assert all(row["chosen"] and row["train_loss"] is not None for row in table1.values())
    assert headline["corrupt"] == "short"  # the sections below Table 1 show the first variant
    page = (run / "report.html").read_text()
    assert "Corrupted models (Table 1)" in page and "Table 2 of long" in page
