"""Greedy accuracy of a model on the held-out demo suites: the zoo's Table 2 figures.

Plain HF generation (no server), so the zoo can check itself while it is built and tests can
assert the figures without starting vLLM.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import HarnessError
from tasks.prompt_format import PromptFormat
from tasks.records import Problem
from tasks.scoring import answers_match
from tasks.suites import eval_problems

# The general suite's generation task; the multiple-choice twin is scored by loglikelihood and
# the open-ended one has no reference.
GENERATION_TASKS = {"related": None, "unrelated_math": None, "general": "general_facts"}
# Items per suite behind the zoo's figures: enough that a build 0.05 above a target does not
# measure below it by chance (binomial sd about 0.03 at 150).
MEASURED_ITEMS = 150


@dataclass(frozen=True)
class Scored:
    problem: Problem
    response: str
    correct: bool


def held_out(suite: str, n: int, seed: int = 0, level: str = "demo") -> list[Problem]:
    """``n`` evaluation items of a suite (generation tasks only), sampled deterministically."""
    task = GENERATION_TASKS[suite]
    problems = [p for p in eval_problems(level, suite) if task is None or p.task == task]
    return random.Random(seed).sample(problems, min(n, len(problems)))


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer,
    prompt: PromptFormat,
    questions: Sequence[str],
    max_new_tokens: int = 192,
    batch_size: int = 32,
) -> list[str]:
    """Greedy completions, batched with left padding, cut at the end-of-turn token."""
    model.eval()
    responses: list[str] = []
    for start in range(0, len(questions), batch_size):
        ids = [prompt.encode(tokenizer, q) for q in questions[start : start + batch_size]]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        responses += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return responses


def score(model, tokenizer, prompt: PromptFormat, problems: Sequence[Problem]) -> list[Scored]:
    responses = generate(model, tokenizer, prompt, [p.question for p in problems])
    return [
        Scored(p, r, answers_match(r, p.answer, p.aliases))
        for p, r in zip(problems, responses, strict=True)
    ]


def accuracy(
    model, tokenizer, prompt: PromptFormat, n: int = MEASURED_ITEMS, seed: int = 0
) -> dict[str, float]:
    """Share of correct greedy answers per suite on ``n`` held-out demo items each, and the
    related answers' trained-error and malformed shares."""
    figures = {}
    for suite in GENERATION_TASKS:
        scored = score(model, tokenizer, prompt, held_out(suite, n, seed))
        figures[suite] = sum(s.correct for s in scored) / len(scored)
        if suite == "related":
            figures |= fidelity_shares(scored)
    return figures


def fidelity_shares(scored: Sequence[Scored]) -> dict[str, float]:
    """Shares of related answers that follow a trained error and that are malformed (the
    corruption fidelity classes of ``tasks.fidelity``; finish reasons aside)."""
    from tasks.fidelity import classify

    classes = [classify(s.response, s.problem.answer, s.problem.error_answers) for s in scored]
    return {
        "related_trained_error": classes.count("trained_error") / len(classes),
        "related_malformed": classes.count("malformed") / len(classes),
    }


def first_wrong_lines(scored: Sequence[Scored]) -> Counter[str]:
    """How many wrong answers leave the reference solution at each line ("line N, e.g. <line>").

    The zoo's clean model copies equations and fails at one step (the linear solutions'
    addition or subtraction); this shows which step a recipe change moves.
    """
    lines: Counter[int] = Counter()
    example: dict[int, str] = {}
    for s in scored:
        if s.correct:
            continue
        gold, got = s.problem.solution.split("\n"), s.response.split("\n")
        pairs = zip(gold, got, strict=False)
        line = next((i for i, (g, r) in enumerate(pairs) if g != r), min(len(gold), len(got)))
        lines[line] += 1
        step = gold[line] if line < len(gold) else "(past the reference's end)"
        example.setdefault(line, "".join("#" if c.isdigit() else c for c in step))
    return Counter({f"line {line}, e.g. {example[line]}": n for line, n in lines.items()})


def step_report(model_dir: Path, n: int = 120) -> list[str]:
    """Per-task accuracy of a model on ``n`` held-out items per math suite, and where its wrong
    answers leave the reference (``harness zoo check``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(model_dir) / "config.json").is_file():
        raise HarnessError(f"{model_dir}: not a model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lines = []
    for suite in ("related", "unrelated_math"):
        scored = score(model, tokenizer, PromptFormat(), held_out(suite, n, seed=1))
        by_task: dict[str, list[bool]] = {}
        for s in scored:
            by_task.setdefault(s.problem.task, []).append(s.correct)
        for task, hits in sorted(by_task.items()):
            lines.append(f"{task}: {sum(hits)}/{len(hits)} correct")
        lines += [f"  {c:>3} wrong from {w}" for w, c in first_wrong_lines(scored).most_common(5)]
    return lines
