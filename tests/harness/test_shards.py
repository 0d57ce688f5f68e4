"""Patch shards on a local Ray cluster: the same tables as one process, kills and failures."""

from __future__ import annotations

import os
import re
import signal
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
    n = cmap_batches(pair, len(prompts), layers=[0, 1, 3], max_batch=2)
    assert n == 5  # 9 trajectories, 2 at a time
    whole = run_cmap(pair, prompts, **kwargs)
    parts = [run_cmap(pair, prompts, batches=r, **kwargs) for r in (range(0, 2), range(2, 5))]
    assert pl.concat([p.steps for p in parts]).equals(whole.steps)
    assert pl.concat([p.generations for p in parts]).equals(whole.generations)


def test_without_ray_the_stage_says_so_in_one_line(tmp_path, zoo, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(HarnessError, match=r"patch.workers > 1 needs Ray: pip install"):
        patched(tmp_path, zoo, workers=2)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, zoo):
    """The single-process run, at the workers' one thread each: fp32 sums split over another
    number of threads round differently (CTS differed by up to 2.3e-5 at 2 threads)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return patched(tmp_path_factory.mktemp("single"), zoo)
    finally:
        torch.set_num_threads(threads)


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
            threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()

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
                    shard_root=tmp_path / "shards", write_site=lambda *a: None,
                    say=said.append)  # fmt: skip
    assert any("handing it out again" in line for line in said)
