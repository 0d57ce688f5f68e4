"""`harness run configs/demo-small.yaml` end to end, with the evaluation killed and resumed.

Uses the zoo when it is built (then flagged items get patched), else tiny random models (then
nothing is flagged; the patch stage itself is covered in test_pipeline.py). About 4 minutes:
three vLLM starts (killed eval, resumed eval, checkpoint progression).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import save_tiny_qwen3

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "demo-small.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def clean_model(tmp_path, chat_tokenizer) -> str:
    from harness.zoo import find_built

    if find_built() is not None:
        return "zoo:clean"
    return str(save_tiny_qwen3(tmp_path / "clean", chat_tokenizer))


def command(out: Path, clean: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(CONFIG),
        "--set",
        f"output_dir={out}",
        "--set",
        f"models.clean={clean}",
        *extra,
    ]


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (rc {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


def marker(run: Path, stage: str) -> dict:
    return json.loads((run / "stages" / f"{stage}.json").read_text())


def test_run_killed_during_eval_resumes_without_redoing_work(tmp_path, chat_tokenizer):
    out = tmp_path / "results"
    run = out / "demo-small"
    clean = clean_model(tmp_path, chat_tokenizer)

    # 1. run up to the evaluation and kill it (SIGKILL: no handler runs) once it is answering
    killed = subprocess.Popen(
        command(out, clean, "--until", "eval"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: any((run / "eval" / "cache").glob("*")), 600, "the eval cache", killed)
        time.sleep(3)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(30)
    assert marker(run, "finetune")["status"] == "success"
    assert marker(run, "eval")["status"] == "started"  # not complete
    tuned = run / "finetune" / "finetune.json"
    tuned_mtime = tuned.stat().st_mtime_ns
    # a half-written table must not pass for a result
    (run / "eval" / "summary.parquet").write_bytes(b"PAR1 half-written")
    deadline = time.monotonic() + 60  # the servers die with their parent
    while processes_mentioning(str(run)) and time.monotonic() < deadline:
        time.sleep(1)
    assert processes_mentioning(str(run)) == [], "a vLLM server outlived the killed run"

    # 2. the same command without --until: finetune skipped, eval resumed, the rest run
    started = time.monotonic()
    done = subprocess.run(
        command(out, clean), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    resumed_seconds = time.monotonic() - started
    log = (run / "log.txt").read_text()
    assert "finetune: complete, skipped" in log
    assert "eval: resuming an interrupted attempt" in log
    assert tuned.stat().st_mtime_ns == tuned_mtime  # the fine-tuned model was not redone
    for stage in ("finetune", "eval", "progression", "patch", "analyze", "report"):
        assert marker(run, stage)["status"] == "success", stage
    summary = pl.read_parquet(run / "eval" / "summary.parquet")  # rewritten, readable
    assert set(summary["model"].to_list()) == {"clean", "corrupt"}
    assert "report:" in done.stdout and (run / "report.html").is_file()

    headline = json.loads((run / "summary.json").read_text())
    assert set(headline) >= {"accuracy", "flagged", "patched", "seconds", "analyze"}
    assert set(headline["accuracy"]["clean"]) == {"related", "unrelated_math", "general"}
    assert (
        headline["flagged"]
        == pl.read_parquet(run / "eval" / "flagged.parquet")
        .filter(pl.col("model") == "corrupt")
        .height
    )
    progression = pl.read_parquet(run / "progression" / "summary.parquet")
    assert {"clean", "step-000002", "step-000004"} <= set(progression["model"].to_list())
    assert (run / "figures" / "progression.png").is_file()
    config = (run / "config.yaml").read_text()
    assert f"clean: {clean}" in config and "max_new_tokens: 48" in config

    # 3. once more: everything is complete, nothing is redone
    again = subprocess.run(
        command(out, clean), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    tail = (run / "log.txt").read_text()[len(log) :]
    for stage in ("finetune", "eval", "progression", "patch", "analyze", "report"):
        assert f"{stage}: complete, skipped" in tail, stage
    print(f"resumed run: {resumed_seconds:.0f} s")
