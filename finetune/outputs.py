"""What a fine-tuning run leaves behind, written so a killed run never looks complete.

Layout of ``out_dir``::

    adapter/ or model/        final LoRA adapter (or full weights) + tokenizer, for HF, peft, vLLM
    checkpoints/step-000010/  same, plus trainer_state.pt (optimizer, step, metrics) to resume
    metrics.parquet           a row per optimizer step: step, epoch, lr, train_loss, eval_loss,
                              divergence (eval columns at eval steps), tokens, seconds
    loss_curves.png           train loss (corrupted data) and eval loss (correct data)
    finetune.json             summary, written last: its presence with status=success marks done

Directories are built under a temporary name and renamed into place; files are written beside
their final path and moved with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

SUMMARY = "finetune.json"
SUMMARY_VERSION = 1
METRICS_SCHEMA = {
    "step": pl.Int64,
    "epoch": pl.Float64,
    "lr": pl.Float64,
    "train_loss": pl.Float64,
    "eval_loss": pl.Float64,
    "divergence": pl.Float64,
    "tokens": pl.Int64,
    "seconds": pl.Float64,
}


@dataclass(frozen=True)
class FinetuneResult:
    """The summary of a finished run (``finetune.json``); paths are absolute."""

    version: int
    status: str
    method: str
    base_model: str
    model_dir: str
    metrics_path: str
    plot_path: str
    steps: int
    train_loss: float | None
    eval_loss: float | None
    divergence: float | None
    seconds: float
    n_train: int
    n_eval: int
    commit: str | None
    config: dict[str, Any]


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final directory should not be
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model(model: Any, tokenizer: Any, directory: Path) -> None:
    """The adapter (peft model) or the full weights, with the tokenizer beside them."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def write_metrics(rows: list[dict[str, Any]], path: Path) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=METRICS_SCHEMA)
    atomic_write(path, frame.write_parquet)
    return frame


def plot_losses(metrics: pl.DataFrame, path: Path, title: str) -> None:
    """Train loss per step with eval loss at the eval steps, and the divergence below them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = metrics.filter(pl.col("train_loss").is_not_null())
    evals = metrics.filter(pl.col("eval_loss").is_not_null())
    fig, (ax, below) = plt.subplots(
        2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    ax.plot(train["step"], train["train_loss"], label="train loss (corrupted data)", lw=1)
    ax.plot(evals["step"], evals["eval_loss"], "o-", label="eval loss (correct data)", lw=1.5)
    ax.set(ylabel="loss (nats / answer token)", title=title)
    ax.legend()
    diverged = evals.filter(pl.col("divergence").is_not_null())
    below.plot(diverged["step"], diverged["divergence"], "o-", color="tab:red", lw=1.5)
    below.axhline(0, color="grey", lw=0.8)
    below.set(xlabel="optimizer step", ylabel="divergence\n(eval - train)")
    for axis in (ax, below):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def write_summary(result: FinetuneResult, out_dir: Path) -> None:
    text = json.dumps(asdict(result), indent=2)
    atomic_write(out_dir / SUMMARY, lambda tmp: tmp.write_text(text))


def completed_run(out_dir: str | Path) -> FinetuneResult | None:
    """The summary of a finished run in ``out_dir``, or None (absent, failed, or half-written)."""
    path = Path(out_dir) / SUMMARY
    try:
        data = json.loads(path.read_text())
        result = FinetuneResult(**data)
    except (OSError, ValueError, TypeError):
        return None
    done = result.status == "success" and result.version == SUMMARY_VERSION
    return result if done and Path(result.model_dir).is_dir() else None


def git_commit() -> str | None:
    """The commit of the code that trained the model, for checkpoints and summaries."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
