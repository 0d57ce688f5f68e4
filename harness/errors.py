"""Expected failures: the CLI prints them as one line and exits non-zero, without a traceback."""

from __future__ import annotations

import sys


class HarnessError(Exception):
    """A failure caused by the user's input or environment, explained in one line."""

    exit_code = 1


class ConfigError(HarnessError):
    """A config file or option that is malformed, unknown or of the wrong type."""

    exit_code = 2


# Errors raised by the other packages for bad input. They cannot import `harness`, so each keeps
# its own class; these are looked up only once their module is loaded (keeps `--help` fast).
_PACKAGE_ERRORS = (
    ("tasks.prompt_format", "PromptFormatError"),
    ("tasks.errors", "TaskDataError"),
    ("patchers.errors", "PatchError"),
    ("finetune.errors", "FinetuneError"),
)


def is_expected(exc: BaseException) -> bool:
    """True for errors that describe bad input rather than a bug in the tool."""
    if isinstance(exc, HarnessError):
        return True
    for module, name in _PACKAGE_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def exit_code_for(exc: BaseException) -> int:
    return getattr(exc, "exit_code", 1)
