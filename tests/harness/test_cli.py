"""The CLI: help everywhere, honest 'not available yet', one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = [
    "demo",
    "run",
    "finetune",
    "serve",
    "eval",
    "compare",
    "patch",
    "analyze",
    "report",
    "zoo",
    "zoo build",
    "zoo check",
]


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_top_level_help_lists_every_command():
    result = harness("--help")
    assert result.returncode == 0
    for command in (
        "demo",
        "run",
        "finetune",
        "serve",
        "eval",
        "patch",
        "analyze",
        "report",
        "zoo",
    ):
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_with_an_example(command):
    result = harness(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    if command != "zoo":
        assert "Example" in result.stdout


def test_bad_config_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nmodels: {clean: zoo:clean, corrupt: zoo:corrupt}\neval: {limit: x}\n")
    result = harness("run", str(bad), "--dry-run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: eval.limit:")


def test_dry_run_prints_resolved_config(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: t\nmodels: {clean: zoo:clean, corrupt: zoo:corrupt}\n")
    result = harness("run", str(good), "--dry-run", "--set", "eval.limit=3")
    assert result.returncode == 0, result.stderr
    assert "limit: 3" in result.stdout and "enable_thinking: false" in result.stdout


def test_zoo_check_of_a_missing_model_is_one_line(tmp_path):
    result = harness("zoo", "check", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: {tmp_path / 'missing'}: not a model directory (no config.json)"
    )
    assert "Traceback" not in result.stderr


def test_usage_error_is_reported_by_click():
    result = harness("report")
    assert result.returncode == 2
    assert "Missing argument" in result.stderr and "Traceback" not in result.stderr


def test_patch_names_a_missing_model_as_its_config_key():
    result = harness("patch", "--clean", "a")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: models.clean: model path 'a' does not exist")


def test_library_progress_bars_are_off_when_stderr_is_a_log(tmp_path):
    import os
    import subprocess
    import sys

    # tqdm reads TQDM_* variables when it is first imported: check it in a fresh interpreter,
    # importing the CLI first as the entry point does
    code = (
        "from harness.cli import quiet_progress_bars_in_logs\n"
        "quiet_progress_bars_in_logs()\n"
        "from tqdm import tqdm\n"
        "print(tqdm(range(3)).disable)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    with open(tmp_path / "log", "w") as log:
        out = subprocess.run(
            [sys.executable, "-c", code],
            stderr=log,
            capture_output=False,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            check=True,
        )
    assert out.stdout.strip() == "True"


def test_analyze_outside_a_run_directory_is_one_line(tmp_path):
    result = harness("analyze", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {tmp_path}: no config.yaml (not a run directory made by harness run)"]
