"""Per-step transfer metrics, computed from the three models' next-token logits.

- `y_clean`, `y_corrupt`, `y_patch`: argmaxes of the unpatched clean, unpatched corrupted and
  patched models on the same context.
- `dl_x = logit_x[y_corrupt] - logit_x[y_clean]` for x in patch, clean, corrupt.
- `cts = (dl_patch - dl_clean) / (dl_corrupt - dl_clean)`: null (not 0) where y_clean ==
  y_corrupt, where the denominator is 0 and the score is undefined (or below `CTS_EPS`, which
  only an exact tie of logits reaches).
- The always-defined continuous measure, in nats, from the KL divergence to the corrupted
  next-token distribution: `kl_clean = KL(P_corrupt || P_clean)`, `kl_patch = KL(P_corrupt ||
  P_patch)` and `kl_transfer = kl_clean - kl_patch`: how much of the clean model's divergence
  from the corrupted one the patch removes. 0 means no transfer, `kl_clean` complete transfer,
  negative means the patch moved away. Aggregate it as `sum(kl_transfer) / sum(kl_clean)`, the
  fraction of divergence transferred, which counts the steps where the argmaxes agree too.
"""

from __future__ import annotations

import torch
from torch import Tensor

CTS_EPS = 1e-6

STEP_COLUMNS = (
    "y_clean",
    "y_corrupt",
    "y_patch",
    "dl_patch",
    "dl_clean",
    "dl_corrupt",
    "cts",
    "kl_clean",
    "kl_patch",
    "kl_transfer",
)


def step_metrics(corrupt: Tensor, clean: Tensor, patch: Tensor) -> dict[str, Tensor]:
    """Metrics for rows of logits [rows, vocab]; `cts` is NaN where undefined."""
    corrupt, clean, patch = corrupt.float(), clean.float(), patch.float()
    y_corrupt, y_clean = corrupt.argmax(-1), clean.argmax(-1)

    def dl(logits: Tensor) -> Tensor:
        return (logits.gather(-1, y_corrupt[:, None]) - logits.gather(-1, y_clean[:, None]))[:, 0]

    dl_patch, dl_clean, dl_corrupt = dl(patch), dl(clean), dl(corrupt)
    denominator = dl_corrupt - dl_clean
    defined = (y_clean != y_corrupt) & (denominator.abs() > CTS_EPS)
    cts = torch.where(
        defined, (dl_patch - dl_clean) / denominator, torch.full_like(denominator, torch.nan)
    )
    log_p = torch.log_softmax(corrupt, -1)
    p = log_p.exp()
    kl_clean = (p * (log_p - torch.log_softmax(clean, -1))).sum(-1)
    kl_patch = (p * (log_p - torch.log_softmax(patch, -1))).sum(-1)
    return {
        "y_clean": y_clean,
        "y_corrupt": y_corrupt,
        "y_patch": patch.argmax(-1),
        "dl_patch": dl_patch,
        "dl_clean": dl_clean,
        "dl_corrupt": dl_corrupt,
        "cts": cts,
        "kl_clean": kl_clean,
        "kl_patch": kl_patch,
        "kl_transfer": kl_clean - kl_patch,
    }
