"""The one exception the patcher raises for bad input; the CLI prints its message as one line."""


class PatchError(Exception):
    """Bad input: a missing path, a mismatched model pair, an unknown site, layer or head."""
