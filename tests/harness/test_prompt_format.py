"""The shared prompt format: one rendering for training, evaluation and patching."""

from __future__ import annotations

import pytest

from tasks.prompt_format import PromptFormat, PromptFormatError

QUESTION = "Solve for x: 2x + 3 = 7"


def test_render_uses_template_system_prompt_and_thinking(chat_tokenizer):
    fmt = PromptFormat(system_prompt="Be brief.", enable_thinking=False)
    text = fmt.render(chat_tokenizer, QUESTION)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert "<think>" not in PromptFormat(enable_thinking=True).render(chat_tokenizer, QUESTION)


def test_training_example_continues_the_eval_prompt_exactly(chat_tokenizer):
    fmt = PromptFormat()
    prompt, completion = fmt.render_example(chat_tokenizer, QUESTION, "**Answer:** 2")
    assert prompt == fmt.render(chat_tokenizer, QUESTION)
    assert completion == "**Answer:** 2<|im_end|>"
    prompt_ids, completion_ids = fmt.encode_example(chat_tokenizer, QUESTION, "**Answer:** 2")
    assert prompt_ids == fmt.encode(chat_tokenizer, QUESTION)
    assert completion_ids[-1] == chat_tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_plain_format_without_template(chat_tokenizer):
    fmt = PromptFormat(chat_template=False, system_prompt="Be brief.")
    assert fmt.render(chat_tokenizer, QUESTION) == f"Be brief.\n\n{QUESTION}\n"
    assert fmt.render_example(chat_tokenizer, QUESTION, "2")[1] == "2<|im_end|>"


def test_missing_chat_template_is_a_clear_error(chat_tokenizer):
    chat_tokenizer_copy = type(chat_tokenizer)(tokenizer_object=chat_tokenizer.backend_tokenizer)
    with pytest.raises(PromptFormatError, match="no chat template"):
        PromptFormat().render(chat_tokenizer_copy, QUESTION)


def test_unknown_prompt_key_is_rejected():
    with pytest.raises(ValueError, match="extra"):
        PromptFormat.model_validate({"chat_templat": True})


def test_batch_encoding_equals_one_by_one(chat_tokenizer):
    pairs = [(QUESTION, "**Answer:** 2"), ("If 3a = 9 what is a?", "3")]
    for fmt in (PromptFormat(), PromptFormat(chat_template=False, system_prompt="Be brief.")):
        expected = [fmt.encode_example(chat_tokenizer, q, a) for q, a in pairs]
        assert [tuple(map(list, ids)) for ids in fmt.encode_examples(chat_tokenizer, pairs)] == [
            tuple(ids) for ids in expected
        ]
