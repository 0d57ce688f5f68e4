"""Linear probes: can a logistic regression tell the two models' activations apart?"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def probe_accuracy(
    clean: Tensor,
    corrupt: Tensor,
    groups: np.ndarray,
    test_share: float = 0.3,
    seed: int = 0,
    max_rows: int | None = 2000,
) -> float:
    """Held-out accuracy of a probe on activations [n, d] of both models on the same n inputs.

    The split is by `groups` (the item each row comes from), so no item's tokens sit on both
    sides of it; 0.5 is chance. Features are standardised on the training rows. At most
    `max_rows` inputs (a seeded sample, the same for both models) keep the fit cheap.
    """
    if max_rows is not None and len(clean) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(clean), max_rows, replace=False))
        clean, corrupt, groups = clean[keep], corrupt[keep], groups[keep]
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(groups)) < 2:
        raise ValueError("a probe needs rows from at least two items")
    x = np.concatenate([clean.float().cpu().numpy(), corrupt.float().cpu().numpy()])
    y = np.repeat([0, 1], len(clean))
    both = np.concatenate([groups, groups])
    split = GroupShuffleSplit(n_splits=1, test_size=test_share, random_state=seed)
    train, test = next(split.split(x, y, both))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(x[train], y[train])
    return float(probe.score(x[test], y[test]))
