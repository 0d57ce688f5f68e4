"""The one exception fine-tuning raises for bad input; the CLI prints it as one line."""

from __future__ import annotations


class FinetuneError(Exception):
    """Bad fine-tuning input (missing model, incompatible adapter, empty or malformed data).

    The message is one line that names the problem and, where possible, the fix.
    """

    exit_code = 2
