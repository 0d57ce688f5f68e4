"""The Ray cluster a run joins: the patch shards' actors and the evaluation's replicas."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.errors import HarnessError


@contextmanager
def ray_cluster(address: str | None, needed_by: str) -> Iterator[Any]:
    """The ``ray`` module, connected: to ``address``, ``$RAY_ADDRESS``, the cluster this
    process joined, or a local one (stopped when the block ends). ``needed_by``: the setting
    that asked for Ray, for the one line when Ray is not installed."""
    try:
        import ray
    except ImportError:
        raise HarnessError(
            f"{needed_by} needs Ray: pip install 'cmap-harness[ray]' (or leave it at 1)"
        ) from None
    address = address or os.environ.get("RAY_ADDRESS") or None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)  # fmt: skip
        except (ConnectionError, ValueError) as exc:
            raise HarnessError(f"no Ray cluster at {address!r}: {exc}") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def split_evenly(n: int, parts: int) -> list[range]:
    """``n`` rows as ``parts`` contiguous ranges whose sizes differ by one at most (empty
    ranges when ``parts`` > ``n``)."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]
