"""How a question is put to a model: one object shared by fine-tuning, evaluation and patching.

Training, evaluation and patching must tokenize a question identically (same chat template, same
system prompt, same ``enable_thinking``). The paper's code trained with one format and patched with
another; owning the format in one place makes that mistake impossible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the prompt format needs."""

    chat_template: str | None
    eos_token: str | None

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def __call__(self, text: list[str], add_special_tokens: bool = True) -> Any: ...


class PromptFormatError(ValueError):
    """The prompt format cannot be applied with this tokenizer."""


class PromptFormat(BaseModel):
    """Chat template on/off, system prompt and thinking mode, applied the same way everywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chat_template: bool = Field(
        True,
        description="Wrap questions in the tokenizer's chat template (with generation prompt).",
    )
    system_prompt: str | None = Field(
        None, description="System message placed before every question; none when null."
    )
    enable_thinking: bool | None = Field(
        False,
        description="Passed to chat templates that know it (Qwen3): false adds an empty think "
        "block, true lets the model think; null leaves the template's default.",
    )

    def messages(self, question: str, answer: str | None = None) -> list[dict[str, str]]:
        """The chat messages for a question, and its answer when given."""
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs.append({"role": "user", "content": question})
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
        return msgs

    def template_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for ``apply_chat_template`` (e.g. ``enable_thinking``)."""
        return {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}

    def render(self, tokenizer: ChatTokenizer, question: str) -> str:
        """The prompt text the model continues: everything up to its first answer token."""
        if not self.chat_template:
            prefix = f"{self.system_prompt}\n\n" if self.system_prompt else ""
            return f"{prefix}{question}\n"
        self._require_template(tokenizer)
        return tokenizer.apply_chat_template(
            self.messages(question),
            tokenize=False,
            add_generation_prompt=True,
            **self.template_kwargs(),
        )

    def render_example(
        self, tokenizer: ChatTokenizer, question: str, answer: str
    ) -> tuple[str, str]:
        """Prompt text and completion text of a training example.

        The completion is what the model must produce after ``render(question)``: the answer and
        the end-of-turn token. It is cut from the rendered conversation when the template renders
        the prompt as a prefix of it (so template-specific wrapping such as an empty think block
        is kept), and is ``answer + eos`` otherwise.
        """
        prompt = self.render(tokenizer, question)
        eos = tokenizer.eos_token or ""
        if self.chat_template:
            full = tokenizer.apply_chat_template(
                self.messages(question, answer), tokenize=False, **self.template_kwargs()
            )
            if full.startswith(prompt) and eos and eos in full[len(prompt) :]:
                completion = full[len(prompt) :]
                return prompt, completion[: completion.rindex(eos) + len(eos)]
        return prompt, answer + eos

    def encode(self, tokenizer: ChatTokenizer, question: str) -> list[int]:
        """The exact token ids of the prompt (special tokens come from the template, not added)."""
        return tokenizer.encode(
            self.render(tokenizer, question), add_special_tokens=not self.chat_template
        )

    def encode_example(
        self, tokenizer: ChatTokenizer, question: str, answer: str
    ) -> tuple[list[int], list[int]]:
        """Prompt ids and completion ids, tokenized apart so training sees what generation sees."""
        prompt, completion = self.render_example(tokenizer, question, answer)
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=not self.chat_template)
        return prompt_ids, tokenizer.encode(completion, add_special_tokens=False)

    def encode_examples(
        self, tokenizer: ChatTokenizer, pairs: Sequence[tuple[str, str]]
    ) -> list[tuple[list[int], list[int]]]:
        """``encode_example`` for many (question, answer) pairs, tokenized in one batch call."""
        rendered = [self.render_example(tokenizer, q, a) for q, a in pairs]
        if not rendered:
            return []
        prompts = tokenizer([p for p, _ in rendered], add_special_tokens=not self.chat_template)
        completions = tokenizer([c for _, c in rendered], add_special_tokens=False)
        return list(zip(prompts["input_ids"], completions["input_ids"], strict=True))

    def _require_template(self, tokenizer: ChatTokenizer) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise PromptFormatError(
                "the tokenizer has no chat template; set prompt.chat_template: false "
                "or use a chat model's tokenizer"
            )
