"""The lm-eval task folder: YAMLs, JSONL data and the hooks in utils.py (see tasks.build)."""
