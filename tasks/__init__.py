"""Task suites (related, unrelated math, general) as lm-eval tasks, their generators and scoring."""

from tasks.prompt_format import PromptFormat, PromptFormatError

__all__ = ["PromptFormat", "PromptFormatError"]
