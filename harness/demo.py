"""``harness demo``: the whole pipeline offline on the embedded tiny models.

Builds the zoo (cached after the first time), then runs ``configs/demo.yaml``: fine-tune the
corrupted model, evaluate both with vLLM on the three suites, flag, patch, report.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from harness.errors import HarnessError
from harness.pipeline import PipelineRun, run_pipeline

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def run_demo(out: Path = Path("results"), config: Path = DEMO_CONFIG) -> PipelineRun:
    """Build the zoo if needed, run the demo config under ``out``, return the finished run."""
    from harness.config import load_config
    from harness.zoo import build_zoo

    if not config.is_file():
        raise HarnessError(f"{config}: the demo config is missing from this checkout")
    cfg = load_config(config, [f"output_dir={out}"])
    console = Console(stderr=True)
    zoo = build_zoo(log=lambda text: console.print(f"zoo: {text}"))
    console.print(f"zoo: {zoo.root}")
    return run_pipeline(cfg)
