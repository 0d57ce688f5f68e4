"""The pipeline's stage machinery (skip, force, resume, stale settings) and its patch stage."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.pipeline import Stage, run_stages
from harness.pipeline.patching import (
    aliases_for,
    identity_targets,
    run_patch_stage,
    score_texts,
    select_items,
    spread,
)
from harness.pipeline.runner import completed, read_marker, run_logging
from harness.pipeline.stages import write_config
from tests.harness.test_report import canned_records


class Killed(Exception):
    """Stands in for a kill in the middle of a stage."""


def make_stages(tmp_path, calls, *, fail=None, settings="v1"):
    """Three stages writing one file each; ``fail`` names one that dies half way."""

    def stage(name, after=()):
        def run(start):
            calls.append((name, start))
            path = tmp_path / "run" / f"{name}.txt"
            path.write_text("half")  # a half-written output ...
            if fail == name:
                raise Killed(name)
            path.write_text("done")  # ... completed
            return {"wrote": path.name}

        def clean(forced):
            calls.append((name, "clean"))
            (tmp_path / "run" / f"{name}.txt").unlink(missing_ok=True)

        return Stage(name, settings={"s": settings}, run=run, clean=clean, after=after)

    return [stage("a"), stage("b", ("a",)), stage("c", ("a", "b"))]


def test_first_run_runs_every_stage_and_marks_it_last(tmp_path):
    calls = []
    results = run_stages(make_stages(tmp_path, calls), tmp_path / "run")
    assert [r.outcome for r in results] == ["done"] * 3
    assert [c for c in calls if c[1] != "clean"] == [("a", "fresh"), ("b", "fresh"), ("c", "fresh")]
    for name in "abc":
        marker = completed(tmp_path / "run", name)
        assert marker["status"] == "success" and marker["info"] == {"wrote": f"{name}.txt"}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["version"] == 1 and run["status"] == "success"
    assert set(run["stages"]) == {"a", "b", "c"}


def test_a_complete_run_is_skipped(tmp_path):
    calls = []
    run_stages(make_stages(tmp_path, calls), tmp_path / "run")
    calls.clear()
    results = run_stages(make_stages(tmp_path, calls), tmp_path / "run")
    assert calls == [] and [r.outcome for r in results] == ["skipped"] * 3


def test_force_redoes_a_stage_and_the_stages_after_it(tmp_path):
    calls = []
    run_stages(make_stages(tmp_path, calls), tmp_path / "run")
    calls.clear()
    results = run_stages(make_stages(tmp_path, calls), tmp_path / "run", force={"b"})
    assert [r.outcome for r in results] == ["skipped", "done", "done"]
    assert ("b", "clean") in calls and ("b", "fresh") in calls and ("c", "fresh") in calls
    with pytest.raises(HarnessError, match="unknown stage"):
        run_stages(make_stages(tmp_path, calls), tmp_path / "run", force={"nope"})


def test_a_killed_stage_is_not_complete_and_resumes(tmp_path):
    calls = []
    with pytest.raises(Killed):
        run_stages(make_stages(tmp_path, calls, fail="b"), tmp_path / "run")
    run_dir = tmp_path / "run"
    assert (run_dir / "b.txt").read_text() == "half"  # the file exists ...
    assert completed(run_dir, "b") is None  # ... but the stage is not complete
    assert read_marker(run_dir, "b")["status"] == "error"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "error"
    calls.clear()
    results = run_stages(make_stages(tmp_path, calls), run_dir)
    assert [r.outcome for r in results] == ["skipped", "done", "done"]
    assert calls[0] == ("b", "resume")  # same settings: keeps what it had (no clean)
    assert (run_dir / "b.txt").read_text() == "done"


def test_a_stage_killed_without_cleanup_is_resumed(tmp_path):
    """SIGKILL leaves the marker at 'started' (no handler runs); that is not complete either."""
    calls = []
    run_stages(make_stages(tmp_path, calls), tmp_path / "run")
    marker = tmp_path / "run" / "stages" / "c.json"
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps(data | {"status": "started"}))
    calls.clear()
    results = run_stages(make_stages(tmp_path, calls), tmp_path / "run")
    assert [r.outcome for r in results] == ["skipped", "skipped", "done"]
    assert calls == [("c", "resume")]


def test_changed_settings_start_the_stage_fresh(tmp_path):
    calls = []
    run_stages(make_stages(tmp_path, calls), tmp_path / "run")
    calls.clear()
    run_stages(make_stages(tmp_path, calls, settings="v2"), tmp_path / "run")
    assert calls[:2] == [("a", "clean"), ("a", "fresh")]


def test_a_stage_that_does_not_apply_is_skipped_and_unmarked(tmp_path):
    calls = []
    stages = make_stages(tmp_path, calls)
    stages[0].applies = lambda: False  # decided when reached
    results = run_stages(stages, tmp_path / "run")
    assert results[0].outcome == "not_applicable" and read_marker(tmp_path / "run", "a") is None
    assert [r.outcome for r in results[1:]] == ["done", "done"]


def test_log_file_records_the_stages(tmp_path):
    run_dir = tmp_path / "run"
    with run_logging(run_dir):
        run_stages(make_stages(tmp_path, []), run_dir)
    with run_logging(run_dir):
        run_stages(make_stages(tmp_path, []), run_dir)
    log = (run_dir / "log.txt").read_text()
    assert "a: starting (first run)" in log and "c: complete, skipped" in log


def config(tmp_path, clean="zoo:clean", **patch) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "t",
            "output_dir": str(tmp_path),
            "models": {"clean": str(clean), "corrupt": str(clean)},
            "eval": {"level": "demo"},
            "patch": {"max_new_tokens": 3, "layers": [0, 3]} | patch,
        }
    )


def test_config_yaml_is_the_resolved_config(tmp_path):
    cfg = config(tmp_path)
    path = write_config(cfg)
    assert path == tmp_path / "t" / "config.yaml"
    written = yaml.safe_load(path.read_text())
    assert written["eval"]["max_new_tokens"] == 512  # a default, filled in
    assert ExperimentConfig.model_validate(written) == cfg


def test_selection_takes_every_flagged_item_and_as_many_controls():
    from harness.flag import flag

    records = canned_records(12)  # 9 flagged related items, 3 related controls
    items = select_items(records, flag(records))
    kinds = {
        suite: g["kind"].to_list() for (suite,), g in items.group_by("suite", maintain_order=True)
    }
    assert kinds["related"] == ["flagged"] * 9 + ["control"] * 3
    assert kinds["unrelated_math"] == kinds["general"] == ["control"] * 9  # as many as flagged
    assert items["prompt_id"].to_list() == list(range(items.height))
    capped = select_items(records, flag(records), 2, max_controls=4)
    assert capped.filter(pl.col("kind") == "flagged").height == 2
    assert capped.filter(pl.col("suite") == "general")["kind"].to_list() == ["control"] * 2
    fewer = select_items(records, flag(records), max_controls=4)
    assert fewer.filter(pl.col("suite") == "general").height == 4
    assert select_items(records, flag(records).clear()).is_empty()  # no corruption, no controls


def test_a_truncated_answer_is_no_control():
    from harness.flag import flag

    records = canned_records().with_columns(
        verdict=pl.when((pl.col("model") == "corrupt") & (pl.col("suite") == "general"))
        .then(pl.lit("truncated"))
        .otherwise(pl.col("verdict"))
    )  # ``correct`` still says True: the verdict decides
    items = select_items(records, flag(records))
    assert items.filter(pl.col("suite") == "general").is_empty()
    assert items.filter(pl.col("suite") == "unrelated_math").height == 3


def _scoring_items():
    from tasks.suites import eval_problems

    fact = next(
        p for p in eval_problems("demo", "general") if p.aliases and p.task == "general_facts"
    )
    math = eval_problems("demo", "related")[0]
    items = pl.DataFrame(
        {
            "prompt_id": [0, 1],
            "kind": ["flagged", "control"],
            "suite": ["related", "general"],
            "task": [f"{math.task}_demo", f"{fact.task}_demo"],
            "doc_id": [0, 0],
            "item_id": [math.id, fact.id],
            "question": [math.question, fact.question],
            "reference": [math.answer, fact.answer],
            "clean_response": ["", ""],
            "corrupt_response": ["", ""],
        }
    )
    return items, math, fact


def test_patched_texts_are_scored_by_the_suite_checker():
    items, math, fact = _scoring_items()
    right = f"**Answer:** {math.answer}"
    assert aliases_for(f"{fact.task}_demo", fact.id, "demo") == tuple(fact.aliases)
    texts = pl.DataFrame(
        {
            "prompt_id": [0, 0, 1, 0],
            "site": ["resid_post"] * 4,
            "layer": [0, 1, 0, 2],
            "head": [None] * 4,
            "text": [right, "**Answer:** 123456", f"{fact.aliases[0]}.", right],
            "finish_reason": ["stop", "stop", "stop", "length"],
        }
    )
    scored = score_texts(texts, items, "demo")
    # the last one has the right answer but ran out of tokens: truncated, never correct
    assert scored["verdict"].to_list() == ["correct", "wrong", "correct", "truncated"]
    assert scored["correct"].to_list() == [True, False, True, False]


def test_an_unscored_text_is_left_out_not_wrong(monkeypatch):
    from tasks import scoring

    items, math, _ = _scoring_items()
    monkeypatch.setattr(scoring, "judge_answer", lambda *args: "unscored", raising=False)
    texts = pl.DataFrame(
        {
            "prompt_id": [0],
            "site": ["resid_post"],
            "layer": [0],
            "head": [None],
            "text": [f"**Answer:** {math.answer}"],
            "finish_reason": ["stop"],
        }
    )
    scored = score_texts(texts, items, "demo")
    assert scored["verdict"].to_list() == ["unscored"] and scored["correct"].to_list() == [None]


def write_eval(tmp_path, records=None):
    from harness.flag import flag
    from harness.summary import summarize

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    records = canned_records() if records is None else records
    records.write_parquet(eval_dir / "records.parquet")
    flag(records).write_parquet(eval_dir / "flagged.parquet")
    summarize(records, 100).write_parquet(eval_dir / "summary.parquet")
    return eval_dir


def test_patch_stage_on_tiny_models(tmp_path, tiny_model_dir):
    eval_dir = write_eval(tmp_path)
    cfg = config(tmp_path, tiny_model_dir, max_new_tokens=None)
    cfg.eval.max_new_tokens = 3  # patched generations get the evaluation's limit
    out = tmp_path / "patch"
    said = []
    info = run_patch_stage(
        cfg, str(tiny_model_dir), str(tiny_model_dir), eval_dir, out, said.append
    )
    items = pl.read_parquet(out / "prompts.parquet")
    steps = pl.read_parquet(out / "steps.parquet")
    texts = pl.read_parquet(out / "texts.parquet")
    # every flagged item (3, related) and 3 controls per suite (1 related item is left)
    assert items.height == 3 + 1 + 3 + 3 and info["prompts"] == 10 and info["flagged"] == 3
    assert texts.height == 10 * 2 and set(texts["layer"].to_list()) == {0, 3}
    assert texts["correct"].dtype == pl.Boolean and texts["suite"].null_count() == 0
    assert {"token", "suite", "kind", "cts", "kl_transfer"} <= set(steps.columns)
    assert (texts["n_tokens"] == texts["token_ids"].list.len()).all()
    assert texts["n_tokens"].max() <= 3 and info["max_new_tokens"] == 3
    cut = texts.filter(pl.col("finish_reason") == "length")
    assert cut.height and (cut["n_tokens"] == 3).all()  # a random model rarely stops in 3
    assert set(cut["verdict"].to_list()) == {"truncated"} and not cut["correct"].any()
    # the same model on both sides: the models always agree, so CTS is undefined (null)
    assert steps["cts"].null_count() == steps.height
    for name in ("table2", "cts_summary", "checks"):
        assert (out / f"{name}.parquet").is_file()
    table2 = pl.read_parquet(out / "table2.parquet")
    assert {"clean", "corrupt", "patched"} == set(table2["condition"].to_list())
    assert table2.filter(pl.col("condition") == "patched")["truncated"].sum() == cut.height
    cts = pl.read_parquet(out / "cts_summary.parquet")
    assert set(cts["kind"].to_list()) == {"flagged", "control"}
    assert cts["mean_cts"].null_count() == cts.height  # never 0 where undefined
    run = json.loads((out / "run.json").read_text())
    assert run["max_new_tokens"] == run["eval_max_new_tokens"] == 3
    assert {c["check"] for c in run["checks"]} == {
        "last_layer_tokens",
        "last_layer_generation",
        "identity",
    }
    # a re-run keeps the finished site instead of patching again
    said.clear()
    run_patch_stage(cfg, str(tiny_model_dir), str(tiny_model_dir), eval_dir, out, said.append)
    assert said[0] == "site resid_post: complete, kept"
    assert not any(line.startswith("site resid_post: 10 prompts") for line in said)


def test_identity_checks_one_layer_per_site():
    from harness.config import PatchConfig

    sites = ["resid_post", "head"]
    assert identity_targets(PatchConfig(sites=sites), 4) == [
        ("resid_post", 2, None),
        ("head", 2, 0),
    ]
    cfg = PatchConfig(sites=sites, layers=[5, 1, 3], heads=[2, 1])
    assert identity_targets(cfg, 8) == [("resid_post", 3, None), ("head", 3, 2)]


def test_the_reference_check_spreads_over_the_items():
    assert spread(10, None) is None and spread(10, 10) is None and spread(3, 64) is None
    assert spread(10, 4) == [0, 3, 6, 9] and spread(10, 1) == [0]
    assert len(spread(300, 64)) == 64 and spread(300, 64)[-1] == 299


def test_a_smaller_patch_token_limit_is_said(tmp_path, tiny_model_dir):
    eval_dir = write_eval(tmp_path)
    cfg = config(tmp_path, tiny_model_dir, max_new_tokens=2, layers=[0], identity_check=False)
    said = []
    run_patch_stage(
        cfg, str(tiny_model_dir), str(tiny_model_dir), eval_dir, tmp_path / "p", said.append
    )
    assert "patched generations are limited to 2 tokens, the evaluation's to 512" in said[0]
    run = json.loads((tmp_path / "p" / "run.json").read_text())
    assert (run["max_new_tokens"], run["eval_max_new_tokens"]) == (2, 512)
    assert "identity" not in {c["check"] for c in run["checks"]}


def test_patch_stage_without_items_writes_empty_tables(tmp_path, tiny_model_dir):
    records = canned_records().with_columns(correct=False, verdict=pl.lit("wrong"))
    eval_dir = write_eval(tmp_path, records)  # nothing flagged, no control
    info = run_patch_stage(
        config(tmp_path),
        str(tiny_model_dir),
        str(tiny_model_dir),
        eval_dir,
        tmp_path / "patch",
        print,
    )
    assert info["prompts"] == 0
    assert pl.read_parquet(tmp_path / "patch" / "steps.parquet").is_empty()
    table2 = pl.read_parquet(tmp_path / "patch" / "table2.parquet")
    assert set(table2["condition"].to_list()) == {"clean", "corrupt"}  # the evaluation's rows
    assert pl.read_parquet(tmp_path / "patch" / "cts_summary.parquet").is_empty()


def test_report_cli_names_a_missing_run_in_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory"


def test_until_and_unknown_stages_are_refused(tmp_path):
    from harness.pipeline import run_pipeline

    with pytest.raises(HarnessError, match="--until 'evaluate': unknown stage"):
        run_pipeline(config(tmp_path), until="evaluate")
    assert not (tmp_path / "t" / "stages").exists()


def test_a_stale_eval_keeps_the_request_cache_and_a_forced_one_does_not(tmp_path):
    from harness.pipeline.stages import eval_stage

    cfg = config(tmp_path)
    out = cfg.run_dir / "eval"
    (out / "cache").mkdir(parents=True)
    (out / "cache" / "clean_rank0.db").write_text("answers")
    (out / "summary.parquet").write_text("old")
    stage = eval_stage(cfg)
    stage.clean(False)
    assert (out / "cache" / "clean_rank0.db").is_file() and not (out / "summary.parquet").exists()
    stage.clean(True)
    assert not out.exists()
