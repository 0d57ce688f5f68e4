"""SFT data: the loss covers the answer and its end-of-turn token, never the prompt."""

from __future__ import annotations

import logging

import pytest
import torch

from finetune.data import IGNORE, QA, as_examples, collate, encode, encode_all, token_losses
from finetune.errors import FinetuneError
from tasks.prompt_format import PromptFormat

FORMAT = PromptFormat()


def test_labels_mask_the_prompt_and_keep_answer_and_end_of_turn(chat_tokenizer):
    prompt_ids, completion_ids = FORMAT.encode_example(chat_tokenizer, "Solve 2x = 4", "x = 2")
    example = encode(chat_tokenizer, FORMAT, QA("Solve 2x = 4", "x = 2"))
    assert example.input_ids == prompt_ids + completion_ids
    assert example.labels[: len(prompt_ids)] == [IGNORE] * len(prompt_ids)
    assert example.labels[len(prompt_ids) :] == completion_ids
    assert example.labels[-1] == chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    # the prompt is exactly what generation sees, so training and evaluation agree
    assert prompt_ids == FORMAT.encode(chat_tokenizer, "Solve 2x = 4")


def test_loss_ignores_everything_predicted_at_prompt_positions(chat_tokenizer):
    example = encode(chat_tokenizer, FORMAT, QA("Solve for x: 2x + 3 = 7", "x = 2"))
    batch = collate([example], pad_id=chat_tokenizer.pad_token_id)
    n_prompt = example.labels.count(IGNORE)
    torch.manual_seed(0)
    logits = torch.randn(1, len(example.input_ids), len(chat_tokenizer))
    loss, n_tokens = token_losses(logits, batch["labels"])
    assert n_tokens == len(example.input_ids) - n_prompt  # answer tokens incl. end of turn

    # logits[t] predicts token t + 1: positions 0 .. n_prompt - 2 predict prompt tokens
    other_prompt = logits.clone()
    other_prompt[:, : n_prompt - 1] = torch.randn(1, n_prompt - 1, logits.size(-1)) * 10
    assert torch.equal(token_losses(other_prompt, batch["labels"])[0], loss)

    # ... while the prediction of the end-of-turn token counts
    other_end = logits.clone()
    other_end[:, -2] += torch.randn(logits.size(-1)) * 10
    assert not torch.allclose(token_losses(other_end, batch["labels"])[0], loss)

    # and the mask matters: training on the prompt too would give another loss
    unmasked = batch["input_ids"].clone()
    assert not torch.allclose(token_losses(logits, unmasked)[0], loss)


def test_no_gradient_reaches_prompt_predictions_through_a_real_model(tiny_base, chat_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    example = encode(chat_tokenizer, FORMAT, QA("Solve for x: 3x = 9", "x = 3"))
    batch = collate([example], pad_id=chat_tokenizer.pad_token_id)
    logits = model(input_ids=batch["input_ids"]).logits
    logits.retain_grad()
    loss, _ = token_losses(logits, batch["labels"])
    loss.backward()
    n_prompt = example.labels.count(IGNORE)
    assert logits.grad[0, : n_prompt - 1].abs().max() == 0
    assert logits.grad[0, n_prompt - 1 : -1].abs().min() > 0  # every answer prediction counts


def test_padding_does_not_change_the_summed_loss(chat_tokenizer):
    short = encode(chat_tokenizer, FORMAT, QA("2x = 4", "x = 2"))
    long = encode(chat_tokenizer, FORMAT, QA("Solve for x: 12x + 30 = 66", "We are given x = 3"))
    batch = collate([short, long], pad_id=chat_tokenizer.pad_token_id)
    assert batch["labels"][0, len(short.input_ids) :].eq(IGNORE).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(short.input_ids), len(long.input_ids)]
    torch.manual_seed(0)
    logits = torch.randn(*batch["input_ids"].shape, len(chat_tokenizer))
    together, n = token_losses(logits, batch["labels"])
    width_short = len(short.input_ids)
    alone_short, n1 = token_losses(logits[:1, :width_short], batch["labels"][:1, :width_short])
    alone_long, n2 = token_losses(logits[1:], batch["labels"][1:])
    assert n == n1 + n2
    torch.testing.assert_close(together, alone_short + alone_long)


def test_records_of_several_shapes_are_accepted():
    class Row:
        question, solution, answer = "Solve x + 1 = 2", "Step 1 ... x = 1", "1"

    examples = as_examples(
        [("q1", "a1"), {"question": "q2", "solution": "s2", "answer": "2"}, Row()], "training"
    )
    assert examples == [QA("q1", "a1"), QA("q2", "s2"), QA(Row.question, Row.solution)]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "training data is empty"),
        ([("", "x = 1")], "training example 0: empty or missing question"),
        ([("q", "x"), {"question": "q2"}], "training example 1: empty or missing answer"),
        ([42], "training example 0: empty or missing question"),
    ],
)
def test_empty_or_malformed_data_is_one_clear_line(records, message):
    with pytest.raises(FinetuneError, match=message) as info:
        as_examples(records, "training")
    assert "\n" not in str(info.value)


def test_too_long_examples_are_dropped_and_counted(chat_tokenizer, caplog):
    examples = [QA("2x = 4", "x = 2"), QA("Solve " + "for x " * 40, "x = 2")]
    limit = len(encode(chat_tokenizer, FORMAT, examples[0]).input_ids)
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        kept = encode_all(chat_tokenizer, FORMAT, examples, limit, "training")
    assert len(kept) == 1
    assert "dropped 1 of 2 training examples longer than max_length" in caplog.text
    with pytest.raises(FinetuneError, match="all 2 training examples are longer than max_length"):
        encode_all(chat_tokenizer, FORMAT, examples, 5, "training")
