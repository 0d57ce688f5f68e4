"""The patcher's vocabulary, importable without torch: configs validate against it."""

from typing import Literal, get_args

Site = Literal["resid_pre", "resid_post", "attn_out", "mlp_out", "head"]
Mode = Literal["transient", "persistent"]
SITES: tuple[str, ...] = get_args(Site)
MODES: tuple[str, ...] = get_args(Mode)
MAX_BATCH = 64  # trajectories the CMAP engine decodes together by default
