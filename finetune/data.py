"""SFT examples as token ids with prompt-masked labels, and their padded batches.

The loss covers the assistant's tokens only, end-of-turn token included: the prompt is a fixed
condition, not a target (paper, section 3.1). Prompt and answer are tokenized by the shared
``PromptFormat`` so training sees exactly what evaluation and patching see.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch

from finetune.errors import FinetuneError
from tasks.prompt_format import PromptFormat

IGNORE = -100  # label of positions without loss (prompt and padding); torch's ignore_index
log = logging.getLogger(__name__)


class QA(NamedTuple):
    """One training or evaluation record: a question and the answer the model should give."""

    question: str
    answer: str


class Encoded(NamedTuple):
    """Token ids of prompt + completion, and labels with every prompt position set to IGNORE."""

    input_ids: list[int]
    labels: list[int]


def as_examples(records: Iterable[Any], what: str) -> list[QA]:
    """Pairs, or mappings/objects with ``question`` and a target text -> checked QAs.

    The target is ``completion`` (``tasks`` examples), else ``solution`` (CSV/JSONL rows), else
    ``answer``: the text the model learns to write, while ``answer`` is often the final value.
    """
    examples = []
    for i, record in enumerate(records):
        if isinstance(record, tuple) and len(record) == 2:
            question, answer = record
        else:
            get = record.get if isinstance(record, Mapping) else partial(getattr, record)
            question = get("question", None)
            answer = get("completion", None) or get("solution", None) or get("answer", None)
        if not (isinstance(question, str) and question.strip()):
            raise FinetuneError(f"{what} example {i}: empty or missing question")
        if not (isinstance(answer, str) and answer.strip()):
            raise FinetuneError(f"{what} example {i}: empty or missing answer")
        examples.append(QA(question, answer))
    if not examples:
        raise FinetuneError(f"{what} data is empty: need at least one (question, answer) example")
    return examples


def encode(tokenizer: Any, prompt: PromptFormat, example: QA) -> Encoded:
    """Prompt ids then completion ids; labels copy the completion and mask the prompt."""
    return labelled(example, *prompt.encode_example(tokenizer, *example))


def labelled(example: QA, prompt_ids: list[int], completion_ids: list[int]) -> Encoded:
    """Prompt ids then completion ids; every prompt position gets the IGNORE label."""
    if not completion_ids:
        raise FinetuneError(f"answer of {example.question[:60]!r} tokenizes to nothing")
    return Encoded(prompt_ids + completion_ids, [IGNORE] * len(prompt_ids) + completion_ids)


def encode_all(
    tokenizer: Any, prompt: PromptFormat, examples: Sequence[QA], max_length: int, what: str
) -> list[Encoded]:
    """Encode every example; drop (and count) those longer than ``max_length`` tokens.

    Dropping beats truncating: a cut answer loses its end-of-turn token and its final answer,
    which would teach the model to stop mid-solution.
    """
    pairs = prompt.encode_examples(tokenizer, examples)  # one batched tokenizer call
    encoded = [labelled(ex, *ids) for ex, ids in zip(examples, pairs, strict=True)]
    kept = [e for e in encoded if len(e.input_ids) <= max_length]
    if not kept:
        longest = min(len(e.input_ids) for e in encoded)
        raise FinetuneError(
            f"all {len(encoded)} {what} examples are longer than max_length={max_length} tokens "
            f"(shortest: {longest}); raise finetune.max_length"
        )
    if len(kept) < len(encoded):
        log.warning(
            "dropped %d of %d %s examples longer than max_length=%d tokens",
            len(encoded) - len(kept),
            len(encoded),
            what,
            max_length,
        )
    return kept


def collate(examples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (IGNORE on padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled positions, and how many there were.

    ``logits[:, t]`` predicts ``labels[:, t + 1]``; IGNORE positions (prompt, padding) add nothing.
    Sums, not means, so gradient accumulation can weight every token equally across micro-batches.
    Only answer positions are upcast to fp32 (a 150k vocabulary makes full-sequence copies big).
    """
    target = labels[:, 1:]
    keep = target != IGNORE  # [rows, pos - 1]
    pred = logits[:, :-1][keep].float()  # [answer tokens, vocab]
    total = torch.nn.functional.cross_entropy(pred, target[keep], reduction="sum")
    return total, int(keep.sum())
