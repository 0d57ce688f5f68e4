"""``harness demo``: the whole pipeline offline on the embedded tiny models.

Builds the zoo (cached after the first time), then runs ``configs/demo.yaml``: fine-tune the
corrupted model, evaluate both with vLLM on the three suites, flag, patch, report.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError
from harness.pipeline import PipelineRun, run_pipeline

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def run_demo(
    out: Path = Path("results"), config: Path = DEMO_CONFIG, verbose: bool = False
) -> PipelineRun:
    """Build the zoo if needed, run the demo config under ``out``, return the finished run.

    The zoo build is a line of the run's board, and its messages go to the run's log.txt.
    """
    from harness.config import load_config
    from harness.pipeline.runner import log, run_logging, step
    from harness.pipeline.stages import training_progress

    if not config.is_file():
        raise HarnessError(f"{config}: the demo config is missing from this checkout")
    cfg = load_config(config, [f"output_dir={out}"])
    with run_logging(cfg.run_dir, verbose=verbose):
        from harness.zoo import build_zoo, load_built, zoo_dir
        from harness.zoo.build import embedded_dir

        how = (
            "cached"
            if load_built(zoo_dir())
            else "unpacked from the package"
            if load_built(embedded_dir())
            else "built"
        )
        with step("zoo", lambda: f"{how}: {zoo_dir()}"), training_progress():
            build_zoo(log=lambda text: log.info("zoo: %s", text))
        return run_pipeline(cfg, verbose=verbose)
