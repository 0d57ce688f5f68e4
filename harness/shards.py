"""Patch shards on Ray: ``patch.workers`` actors, each loading the pair once.

A site's run is the engine's batches of trajectories (``patchers.cmap_batches``); a shard is a
contiguous range of them, so a shard's rows are the single-process run's rows for those
batches, and the site's tables (``harness.patch.write_patch``) are the same row for row (where
every process computes alike: on CPUs, with as many threads as a worker has; fp32 sums split
over another number of threads round differently, by up to 2.3e-5 in CTS on the zoo pair). The
driver hands shards to idle actors (``num_gpus=1`` each on GPUs, an equal share of the CPUs
otherwise) and writes each finished shard under ``<patch>/shards/<site>/``: a resumed stage
never redoes one. A shard whose actor died or raised is handed out once more (a dead actor is
replaced by a fresh one); a second failure fails the stage with one line naming the shard.

The cluster is ``patch.ray_address``, else ``$RAY_ADDRESS``, else the one this process already
joined (``ray.init`` before the run), else a local one started for the stage and stopped after
it. Every actor reads the models from the paths the driver gives: on several nodes they must be
on a shared filesystem (or a hub id each node can load).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from harness.cluster import ray_cluster, split_evenly
from harness.errors import HarnessError

SHARDS_PER_WORKER = 4  # small enough to balance uneven shards and to lose little on a failure
ATTEMPTS = 2


@dataclass(frozen=True)
class Shard:
    index: int
    batches: range

    def label(self, site: str) -> str:
        last = self.batches.stop - 1
        return f"shard {self.index} of site {site} (batches {self.batches.start}-{last})"


def plan_shards(n_batches: int, workers: int) -> list[Shard]:
    """Contiguous, near-equal ranges of the ``n_batches`` batches, ``SHARDS_PER_WORKER`` per
    worker at most and never empty."""
    count = max(1, min(n_batches, workers * SHARDS_PER_WORKER))
    return [Shard(i, batches) for i, batches in enumerate(split_evenly(n_batches, count))]


class PatchWorker:
    """A Ray actor's state: the pair, loaded once, patching the shards it is handed."""

    def __init__(self, clean: str, corrupt: str, load: dict[str, Any], threads: int) -> None:
        import torch

        from harness.patch import load_models

        torch.set_num_threads(max(1, threads))
        self.models = load_models(clean, corrupt, **load)

    def pid(self) -> int:
        return os.getpid()

    def patch(self, prompt_ids, patch, limit: int, site: str, batches: range):
        from harness.patch import patch_site

        return patch_site(self.models, prompt_ids, patch, limit, site, batches)


def patch_sites(
    sites: Sequence[str],
    *,
    clean: str,
    corrupt: str,
    load: dict[str, Any],
    patch: Any,
    prompt_ids: list[list[int]],
    limit: int,
    shard_root: Path,
    say: Callable[[str], None],
) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """Each site's (steps, texts), patched in shards on ``patch.workers`` Ray actors, the
    finished shards kept under ``shard_root`` until the caller has written the tables."""
    from transformers import AutoConfig

    from patchers import cmap_batches

    trust = load.get("trust_remote_code", False)
    config = AutoConfig.from_pretrained(clean, trust_remote_code=trust)  # no weights here
    tables = {}
    with ray_cluster(patch.ray_address, "patch.workers > 1") as ray:
        gpu = load.get("device") == "cuda"
        cpus = int(ray.cluster_resources().get("CPU", 1))
        threads = 1 if gpu else max(1, cpus // patch.workers)
        options = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": threads}
        actor_class = ray.remote(max_restarts=0, max_task_retries=0)(PatchWorker)

        def start() -> Any:
            return actor_class.options(**options).remote(clean, corrupt, load, threads)

        actors = [start() for _ in range(patch.workers)]
        try:
            pids = ray.get([a.pid.remote() for a in actors])  # every pair loaded
            each = "1 GPU" if gpu else f"{threads} CPU{'s' * (threads > 1)}"
            say(f"{patch.workers} Ray workers ready ({each} each; pids "
                f"{', '.join(map(str, pids))})")  # fmt: skip
            ids = ray.put(prompt_ids)
            for site in sites:
                n_batches = cmap_batches(config, len(prompt_ids), site=site,
                                         layers=patch.requested_layers(),
                                         heads=patch.site_heads(site), max_batch=patch.max_batch,
                                         trust_remote_code=trust)  # fmt: skip
                shards = plan_shards(n_batches, patch.workers)
                folder = shard_folder(shard_root / site, shards)
                todo = [s for s in shards if not shard_done(folder, s)]
                if len(todo) < len(shards):
                    say(f"site {site}: {len(shards) - len(todo)} of {len(shards)} shards kept")
                run = lambda actor, s, site=site: actor.patch.remote(  # noqa: E731
                    ids, patch, limit, site, s.batches
                )
                actors = _dispatch(ray, actors, todo, run, start, folder, site, say)
                parts = [read_shard(folder, s) for s in shards]
                tables[site] = (pl.concat([p[0] for p in parts]), pl.concat([p[1] for p in parts]))
        finally:
            for actor in actors:
                ray.kill(actor)
    return tables


def _dispatch(ray, actors, todo, run, start, folder: Path, site: str, say) -> list[Any]:
    """Hand the shards to idle actors until all are written; returns the live actors."""
    pending, idle, running = deque(todo), list(actors), {}
    failures: dict[int, int] = {}
    done, total = 0, len(todo)
    while pending or running:
        while pending and idle:
            shard, actor = pending.popleft(), idle.pop()
            running[run(actor, shard)] = (shard, actor)
        [ref], _ = ray.wait(list(running), num_returns=1)
        shard, actor = running.pop(ref)
        try:
            steps, texts = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            failures[shard.index] = failures.get(shard.index, 0) + 1
            why = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if failures[shard.index] >= ATTEMPTS:
                raise HarnessError(
                    f"{shard.label(site)} failed {ATTEMPTS} times; last: {why}"
                ) from None
            if isinstance(exc, ray.exceptions.RayActorError):
                ray.kill(actor)
                actors = [a for a in actors if a is not actor]
                actor = start()
                actors.append(actor)
            say(f"{shard.label(site)} failed ({why}); handing it out again")
            pending.appendleft(shard)
            idle.append(actor)
            continue
        write_shard(folder, shard, steps, texts)
        idle.append(actor)
        done += 1
        say(f"site {site}: {done} of {total} shards patched")
    return actors


def shard_folder(folder: Path, shards: list[Shard]) -> Path:
    """``folder`` for this plan of shards; a folder left by another plan is emptied."""
    plan = [[s.batches.start, s.batches.stop] for s in shards]
    plan_file = folder / "plan.json"
    try:
        same = json.loads(plan_file.read_text()) == plan
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        plan_file.write_text(json.dumps(plan))
    return folder


def _paths(folder: Path, shard: Shard) -> tuple[Path, Path]:
    return folder / f"{shard.index:04d}.steps.parquet", folder / f"{shard.index:04d}.texts.parquet"


def shard_done(folder: Path, shard: Shard) -> bool:
    return all(p.is_file() for p in _paths(folder, shard))


def write_shard(folder: Path, shard: Shard, steps: pl.DataFrame, texts: pl.DataFrame) -> None:
    """Each file through a temporary name: a file that exists is complete (texts last)."""
    for frame, path in zip((steps, texts), _paths(folder, shard), strict=True):
        tmp = path.with_suffix(".tmp")
        frame.write_parquet(tmp)
        tmp.rename(path)


def read_shard(folder: Path, shard: Shard) -> tuple[pl.DataFrame, pl.DataFrame]:
    steps, texts = _paths(folder, shard)
    return pl.read_parquet(steps), pl.read_parquet(texts)


def run_patch_on_ray(
    clean: str,
    corrupt: str,
    load: dict[str, Any],
    questions: list[str],
    patch: Any,
    prompt_format: Any,
    limit: int,
    outputs: dict[Path, Sequence[str]],
    shard_root: Path,
    say: Callable[[str], None],
) -> list[Any]:
    """``harness.patch.run_patch`` on ``patch.workers`` Ray actors: each directory of
    ``outputs`` gets its sites' three tables, as the single-process run writes them (one
    directory for all sites in ``harness patch``, one per site in the pipeline's stage); the
    shards wait under ``shard_root`` until every table is written."""
    from harness.patch import check_out_dir, encode_questions, patch_spec, write_patch

    for out_dir in outputs:
        check_out_dir(out_dir)
    prompt_ids = encode_questions(clean, questions, prompt_format, load["trust_remote_code"])
    sites = [site for out_sites in outputs.values() for site in out_sites]
    tables = patch_sites(sites, clean=clean, corrupt=corrupt, load=load, patch=patch,
                         prompt_ids=prompt_ids, limit=limit, shard_root=shard_root,
                         say=say)  # fmt: skip
    written = []
    for out_dir, out_sites in outputs.items():
        spec = patch_spec(clean, corrupt, out_sites, patch, limit, load["device"], prompt_format)
        site_tables = [tables[site] for site in out_sites]
        written.append(write_patch(out_dir, questions, prompt_ids, site_tables, spec))
    shutil.rmtree(shard_root, ignore_errors=True)
    return written
