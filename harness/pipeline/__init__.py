"""``harness run``: the experiment's stages, each resumable and skipped when complete."""

from harness.pipeline.runner import Stage, StageResult, run_stages
from harness.pipeline.stages import STAGES, PipelineRun, run_pipeline

__all__ = ["STAGES", "PipelineRun", "Stage", "StageResult", "run_pipeline", "run_stages"]
