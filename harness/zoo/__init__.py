"""The embedded tiny models: a clean Qwen3-shaped model and its corrupted LoRA variant."""

from harness.zoo.build import ZooPaths, ZooRecipe, build_zoo, find_built, load_built, zoo_dir
from harness.zoo.report import figures_table

__all__ = [
    "ZooPaths",
    "ZooRecipe",
    "build_zoo",
    "figures_table",
    "find_built",
    "load_built",
    "zoo_dir",
]
