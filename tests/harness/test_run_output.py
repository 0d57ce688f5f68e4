"""What a run shows: one line per stage on the terminal, the details in log.txt, stage versions.

The quiet terminal is checked in this process (pytest's capture stands in for the terminal) and
in a child process with real file descriptors, where native code and child processes write to
fds 1 and 2 directly, as vLLM's engine does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
import yaml

from harness.pipeline import Stage, run_stages, runner
from harness.pipeline.runner import code_modules, code_version, read_marker, run_logging
from tests.harness.test_report import canned_records

NOISE = ("vllm INFO noise", "a library print", "lm-eval warning", "native fd 2", "child process")


def noisy(start: str) -> dict:
    """What the libraries do during a stage: log records, prints, native and child writes."""
    logging.getLogger("vllm").info("vllm INFO noise")
    print("a library print")
    logging.getLogger("lm_eval").warning("lm-eval warning")
    os.write(2, b"native fd 2\n")
    subprocess.run([sys.executable, "-c", "import sys; print('child process', file=sys.stderr)"])
    runner.log.info("a: news from the stage")
    runner.progress(done=3, total=3)
    return {"n": 3}


def stages() -> list[Stage]:
    return [
        Stage("a", {"x": 1}, noisy, describe=lambda info: f"{info['n']} things"),
        Stage("b", {"y": 2}, lambda start: {}, after=("a",)),
    ]


def test_the_terminal_shows_one_line_per_stage_and_the_log_the_rest(tmp_path, capfd):
    run_dir = tmp_path / "run"
    with run_logging(run_dir):
        run_stages(stages(), run_dir)
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("✓ a") and "done in" in lines[0] and "3 things" in lines[0]
    assert lines[1].startswith("✓ b")
    log = (run_dir / "log.txt").read_text()
    for text in (*NOISE, "a: news from the stage", "a: starting (first run)"):
        assert text in log, text
    # once more: skipped stages get their line too, still nothing else
    with run_logging(run_dir):
        run_stages(stages(), run_dir)
    out, err = capfd.readouterr()
    assert [line.split()[:4] for line in err.strip().splitlines()] == [
        ["·", "a", "complete,", "kept"],
        ["·", "b", "complete,", "kept"],
    ]


def test_verbose_echoes_the_details(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with run_logging(run_dir, verbose=True):
        run_stages(stages(), run_dir)
    out, err = capsys.readouterr()
    for text in ("vllm INFO noise", "a library print", "lm-eval warning", "a: starting"):
        assert text in out + err, text
    assert "a library print" in (run_dir / "log.txt").read_text()


def test_streams_and_handlers_are_restored(tmp_path):
    before = (sys.stdout, sys.stderr, list(logging.getLogger().handlers))
    level = logging.getLogger().level
    with pytest.raises(RuntimeError), run_logging(tmp_path / "run"):
        raise RuntimeError("boom")
    assert (sys.stdout, sys.stderr, list(logging.getLogger().handlers)) == before
    assert logging.getLogger().level == level
    assert "RuntimeError: boom" in (tmp_path / "run" / "log.txt").read_text()  # the traceback


CHILD = """
import logging, os, subprocess, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from harness.pipeline.runner import run_logging
logging.getLogger("vllm").addHandler(logging.StreamHandler(sys.stdout))  # as vLLM configures it
with run_logging(Path(sys.argv[1]), verbose=sys.argv[2] == "1"):
    logging.getLogger("vllm").warning("vllm handler line")
    os.write(1, b"native fd 1\\n")
    subprocess.run([sys.executable, "-c", "print('child process')"])
print("after the run")
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_real_descriptors_go_to_the_log_and_verbose_tees_them(tmp_path, verbose):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(Path(__file__).resolve().parents[2])))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), "1" if verbose else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    log = (tmp_path / "run" / "log.txt").read_text()
    for text in ("vllm handler line", "native fd 1", "child process"):
        assert text in log, text
        assert (text in done.stdout + done.stderr) == verbose, text
    assert done.stdout.strip().endswith("after the run")  # fds 1 and 2 are back


# -- stage versions ------------------------------------------------------------------------


def test_a_stage_made_by_another_version_is_redone_and_said(tmp_path, capfd, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(runner, "project_version", lambda: "0.0.1")
    run_stages(stages(), run_dir)
    assert read_marker(run_dir, "a")["code"]["project"] == "0.0.1"
    capfd.readouterr()
    monkeypatch.setattr(runner, "project_version", lambda: "0.0.2")
    with run_logging(run_dir):
        results = run_stages(stages(), run_dir)
    assert [r.outcome for r in results] == ["done", "done"]
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if "made by" in line]
    assert notes[0] == (
        "a: its outputs were made by cmap-harness 0.0.1, this is cmap-harness 0.0.2: "
        "redoing the stage"
    )
    record = json.loads((run_dir / "run.json").read_text())
    assert record["stages"]["a"]["from_other_version"]["was"]["project"] == "0.0.1"
    assert record["code"]["project"] == "0.0.2"
    assert read_marker(run_dir, "a")["code"]["project"] == "0.0.2"


def test_a_marker_from_before_versions_were_recorded_is_redone(tmp_path, capfd):
    run_dir = tmp_path / "run"
    run_stages(stages(), run_dir)
    path = run_dir / "stages" / "a.json"
    old = json.loads(path.read_text())
    del old["code"]  # and its fingerprint was computed without code
    path.write_text(json.dumps(old | {"fingerprint": "0123456789abcdef"}))
    with run_logging(run_dir):
        results = run_stages(stages(), run_dir)
    assert results[0].outcome == "done"
    assert "made by a version that recorded none" in capfd.readouterr().err


def test_the_installed_version_is_in_every_marker(tmp_path):
    from importlib.metadata import version

    run_stages(stages(), tmp_path / "run")
    assert read_marker(tmp_path / "run", "b")["code"]["project"] == version("cmap-harness")


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_code_version_follows_code_not_comments_and_follows_imports(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(runner, "CODE_PACKAGES", ("cvpkg",))
    write_package(
        tmp_path,
        {
            "cvpkg/__init__.py": "",
            "cvpkg/scorer.py": '"""Scores."""\nfrom cvpkg.parse import parse\n\n'
            "def score(x):\n    return parse(x) == 1\n",
            "cvpkg/parse.py": "def parse(x):\n    return int(x)\n",
        },
    )
    first = code_version(["cvpkg.scorer"])
    assert code_modules(["cvpkg.scorer"]) == ["cvpkg.parse", "cvpkg.scorer"]
    # a docstring and a comment: same version
    (tmp_path / "cvpkg/scorer.py").write_text(
        '"""Scores, reworded."""\nfrom cvpkg.parse import parse  # the parser\n\n'
        'def score(x):\n    """Whether x is one."""\n    return parse(x) == 1\n'
    )
    assert code_version(["cvpkg.scorer"]) == first
    # a fix in a module the scorer imports: a new version
    (tmp_path / "cvpkg/parse.py").write_text("def parse(x):\n    return int(x.strip())\n")
    assert code_version(["cvpkg.scorer"]) != first


def test_the_eval_and_patch_stages_follow_the_scorer():
    from harness.pipeline.stages import EVAL_CODE, PATCH_CODE

    assert {"tasks.scoring", "tasks.mathparse", "harness.flag"} <= set(code_modules(EVAL_CODE))
    assert {"tasks.scoring", "patchers.cmap"} <= set(code_modules(PATCH_CODE))
    assert code_version(["tasks/evals/*.yaml"]) is not None


# -- a cheap pipeline through the CLI ----------------------------------------------------------


def fake_eval(cfg, models=None, *, out_dir=None, **kwargs):
    """The evaluation's outputs from canned records, with the noise a real one makes."""
    from harness.flag import flag
    from harness.summary import summarize

    for _ in range(50):
        logging.getLogger("vllm").info("vllm INFO noise")
    print("a library print")
    os.write(2, b"native fd 2\n")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = canned_records()
    for name, frame in {
        "records": records,
        "summary": summarize(records, 20),
        "flagged": flag(records),
    }.items():
        frame.write_parquet(out / f"{name}.parquet")

    class Result:
        flagged = flag(records)
        seconds = 0.1

    return Result()


def fake_report(run_dir):
    run_dir = Path(run_dir)
    (run_dir / "summary.json").write_text(
        json.dumps({"accuracy": {"clean": {"related": 1.0}, "corrupt": {"related": 0.25}}})
    )
    (run_dir / "report.html").write_text("<html></html>")

    class Built:
        html = run_dir / "report.html"
        figures = ()

    return Built()


def pipeline_config(tmp_path: Path, model: Path, **patch) -> Path:
    config = {
        "name": "quiet",
        "output_dir": str(tmp_path / "results"),
        "models": {"clean": str(model), "corrupt": str(model)},
        "eval": {"level": "demo"},
        "patch": {"max_prompts_per_suite": 1, "max_new_tokens": 3, "layers": [0, 3]} | patch,
    }
    path = tmp_path / "quiet.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def harness_main(monkeypatch, *args: str) -> int:
    from harness.cli import main

    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code or 0


def test_a_cheap_pipeline_prints_a_few_lines(tmp_path, tiny_model_dir, monkeypatch, capfd):
    monkeypatch.setattr("harness.evaluate.run_eval", fake_eval)
    monkeypatch.setattr("harness.report.build_report", fake_report)
    config = pipeline_config(tmp_path, tiny_model_dir)
    assert harness_main(monkeypatch, "run", str(config)) == 0
    out, err = capfd.readouterr()
    terminal = (out + err).strip().splitlines()
    assert len(terminal) < 20, out + err
    assert not any(
        text in out + err for text in ("vllm INFO noise", "native fd 2", "a library print")
    )
    for stage in ("eval", "patch", "report"):
        assert any(line.startswith(f"✓ {stage}") for line in terminal), stage
    assert any("finetune" in line and "not applicable" in line for line in terminal)
    assert "accuracy per suite" in out and "report:" in out
    log = (tmp_path / "results" / "quiet" / "log.txt").read_text()
    assert log.count("vllm INFO noise") == 50 and "native fd 2" in log
    assert "patch: site resid_post" in log  # the patch stage's own messages
    texts = pl.read_parquet(tmp_path / "results" / "quiet" / "patch" / "texts.parquet")
    assert texts.height > 0

    # --verbose: the details on the terminal too
    assert harness_main(monkeypatch, "run", str(config), "--verbose", "--force", "eval") == 0
    out, err = capfd.readouterr()
    assert "vllm INFO noise" in out + err and "eval: starting (forced)" in out + err


# -- validate before loading ---------------------------------------------------------------


def refuse_weights(monkeypatch) -> None:
    """Loading a model fails the test: the checks must come first."""

    def loaded(*args, **kwargs):
        raise AssertionError("weights were loaded before the flags were checked")

    for target in ("harness.patch.load_models", "patchers.load_pair", "patchers.models.load_pair"):
        monkeypatch.setattr(target, loaded)
    monkeypatch.setattr("harness.pipeline.stages.run_all", loaded)


def test_patch_cli_rejects_a_layer_the_model_lacks_before_loading(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    refuse_weights(monkeypatch)
    model = str(tiny_model_dir)
    args = ["patch", "--clean", model, "--corrupt", model, "--prompt", "2+2?", "--out"]
    code = harness_main(monkeypatch, *args, str(tmp_path / "p"), "--layers", "0,99")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("error: patch.layers: 99 out of range: the model has 4 layers (0-3")
    assert not (tmp_path / "p").exists()


def test_patch_cli_names_every_bad_flag(tmp_path, tiny_model_dir, monkeypatch, capsys):
    refuse_weights(monkeypatch)
    model = str(tiny_model_dir)
    code = harness_main(
        monkeypatch, "patch", "--clean", model, "--corrupt", model, "--prompt", "2+2?",
        "--out", str(tmp_path / "p"), "--site", "resid_mid", "--mode", "sticky",
        "--layers", "1,x", "--heads", "0",
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1  # every problem, on one line, named by its config key
    for problem in ("patch.sites.0: input should be 'resid_pre'", "got 'resid_mid'",
                    "patch.mode: input should be 'transient' or 'persistent', got 'sticky'",
                    "patch.layers.1: input should be a valid integer"):  # fmt: skip
        assert problem in err, problem
    code = harness_main(
        monkeypatch, "patch", "--clean", model, "--corrupt", model, "--prompt", "2+2?",
        "--out", str(tmp_path / "p"), "--site", "resid_post", "--heads", "0",
    )  # fmt: skip
    assert code == 2
    assert "patch.heads: set, but patch.sites (resid_post) has no 'head'" in capsys.readouterr().err


def test_run_rejects_out_of_range_layers_and_heads_before_anything(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    refuse_weights(monkeypatch)
    config = pipeline_config(tmp_path, tiny_model_dir, layers=[0, 99], sites=["head"], heads=[1, 5])
    code = harness_main(monkeypatch, "run", str(config), "--until", "evaluate")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--until 'evaluate': unknown stage" in err
    assert "patch.layers: 99 out of range: the model has 4 layers" in err
    assert "patch.heads: 5 out of range: the model has 2 attention heads" in err
    assert not (tmp_path / "results").exists()  # nothing written, nothing loaded


def test_the_patch_stage_checks_before_it_loads(tmp_path, tiny_model_dir, monkeypatch):
    from harness.config import load_config
    from harness.errors import ConfigError
    from harness.pipeline.stages import patch_stage

    refuse_weights(monkeypatch)
    monkeypatch.setattr("harness.pipeline.patching.run_patch_stage", refuse_weights)
    cfg = load_config(pipeline_config(tmp_path, tiny_model_dir, layers=[7]))
    with pytest.raises(ConfigError, match=r"patch\.layers: 7 out of range"):
        patch_stage(cfg).run("fresh")


def test_an_adapter_is_measured_by_its_base(tmp_path, tiny_model_dir):
    from harness.preflight import model_shape

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tiny_model_dir)})
    )
    shape = model_shape(str(adapter))
    assert shape is not None and (shape.layers, shape.heads) == (4, 2)
    assert model_shape(str(tmp_path / "nothing")) is None


def test_the_demo_builds_the_zoo_on_a_line_of_its_own(tmp_path, monkeypatch, capfd):
    """The zoo build's messages and noise go to the demo run's log.txt; the terminal gets a
    'zoo' line, and the pipeline runs on the same board (nested run_logging)."""
    from harness import demo
    from harness.pipeline import PipelineRun

    def build_zoo(log=print, **kwargs):
        log("training the clean model")
        print("a library print")
        runner.progress(done=1, total=2)

    def run_pipeline(cfg, verbose=False):
        assert runner._ACTIVE, "the pipeline runs inside the demo's run_logging"
        with run_logging(cfg.run_dir):  # nested: the same board and log
            runner.log.info("eval: pipeline message")
        return PipelineRun(cfg.run_dir, [], cfg.run_dir / "report.html", {}, 0.0)

    monkeypatch.setattr("harness.zoo.build_zoo", build_zoo)
    monkeypatch.setattr("harness.zoo.load_built", lambda root: None)
    monkeypatch.setattr(demo, "run_pipeline", run_pipeline)
    demo.run_demo(tmp_path)
    out, err = capfd.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("✓ zoo") and "built" in err
    log = (tmp_path / "demo" / "log.txt").read_text()
    for text in ("zoo: training the clean model", "a library print", "eval: pipeline message"):
        assert text in log, text


def test_a_failed_check_is_a_line_of_its_own(tmp_path, capfd):
    """Error-level records of the project's own loggers (the patch stage's failed sanity
    checks) reach the terminal; the same level from a library stays in log.txt."""

    def checks(start: str) -> dict:
        logging.getLogger("harness.pipeline.patch").error("CHECK FAILED: last layer")
        logging.getLogger("vllm").error("a library's error")
        return {}

    with run_logging(tmp_path / "run"):
        run_stages([Stage("patch", {}, checks)], tmp_path / "run")
    err = capfd.readouterr().err
    assert err.splitlines()[0] == "CHECK FAILED: last layer"
    assert "a library's error" not in err
    assert "a library's error" in (tmp_path / "run" / "log.txt").read_text()


def test_a_library_logger_that_does_not_propagate_still_reaches_the_log(tmp_path, capfd):
    """vLLM configures ``vllm`` with a handler of its own and ``propagate=False``; during a run
    its records go to log.txt, not to that handler's stream, and it is put back afterwards."""
    import io

    own = io.StringIO()
    logger = logging.getLogger("vllm.fake_engine")
    handler = logging.StreamHandler(own)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        run_dir = tmp_path / "run"
        with run_logging(run_dir):
            logger.warning("engine warming up")
        assert "engine warming up" in (run_dir / "log.txt").read_text()
        assert own.getvalue() == ""
        assert "engine warming up" not in capfd.readouterr().err
        assert logger.propagate is False and logger.handlers == [handler]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
