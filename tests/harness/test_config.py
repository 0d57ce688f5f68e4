"""Config validation: every broken file gives one line naming the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import ExperimentConfig, load_config
from harness.errors import ConfigError

CONFIGS = Path(__file__).parents[2] / "configs"

VALID = """\
name: t
models: {clean: zoo:clean, corrupt: zoo:corrupt}
eval: {limit: 5, level: demo}
patch: {layers: [0, 2], sites: [resid_post, head]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message.removeprefix(f"{path}: ")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig) and cfg.name


def test_valid_file_fills_defaults(tmp_path):
    cfg = load_config(write(tmp_path, VALID))
    assert cfg.patch.layers == [0, 2]
    assert cfg.prompt.chat_template is True and cfg.prompt.enable_thinking is False
    assert cfg.finetune.weight_decay == 0.01 and cfg.finetune.warmup_ratio == 0.1
    assert cfg.run_dir == Path("results/t")


def test_malformed_yaml(tmp_path):
    message = error_for(tmp_path, "name: t\nmodels: {clean: zoo:clean\n  eval: [\n")
    assert message.startswith("malformed YAML at line")


def test_unknown_key_suggests_the_close_key(tmp_path):
    message = error_for(tmp_path, VALID.replace("limit: 5", "limt: 5"))
    assert message == "eval.limt: unknown key (did you mean eval.limit?)"


def test_unknown_key_without_a_close_one_lists_the_alternatives(tmp_path):
    message = error_for(tmp_path, VALID.replace("limit: 5", "zzz: 5"))
    assert message.startswith("eval.zzz: unknown key (expected one of: engine, suites")
    assert "limit" in message


def test_a_top_level_typo_is_matched_against_every_section(tmp_path):
    """A key put at the top level that lives in a section: the dotted path is suggested."""
    text = VALID.replace("models: {clean: zoo:clean, corrupt: zoo:corrupt}\n", "")
    text += "clean_model: zoo:clean\nsystem_prompt: hi\nmax_new_tokens: 5\n"
    message = error_for(tmp_path, text)
    assert "clean_model: unknown key (did you mean models.clean?)" in message
    assert "system_prompt: unknown key (did you mean prompt.system_prompt?)" in message
    assert (
        "max_new_tokens: unknown key (did you mean analyze.max_new_tokens or "
        "eval.max_new_tokens or patch.max_new_tokens?)" in message
    )


def test_every_problem_is_named_in_one_line(tmp_path):
    text = "clean_model: zoo:clean\neval: {limit: many, suites: [related, maths]}\n"
    message = error_for(tmp_path, text)
    problems = message.split("; ")
    assert problems == [
        "name: required key is missing",
        "models: required key is missing",
        "eval.suites.1: input should be 'related', 'unrelated_math' or 'general', got 'maths'",
        "eval.limit: input should be a valid integer, unable to parse string as an integer, "
        "got 'many'",
        "clean_model: unknown key (did you mean models.clean?)",
    ]


def test_a_union_is_one_problem(tmp_path):
    """pydantic reports each alternative of ``'all' | list[int]``; the user sees one line."""
    message = error_for(tmp_path, VALID.replace("layers: [0, 2]", "layers: some"))
    assert message == "patch.layers: input should be 'all' or a valid list, got 'some'"
    message = error_for(tmp_path, VALID.replace("layers: [0, 2]", "layers: [0, x]"))
    assert message.startswith("patch.layers.1: input should be a valid integer")


def test_wrong_type(tmp_path):
    message = error_for(tmp_path, VALID.replace("limit: 5", "limit: many"))
    assert message.startswith("eval.limit: input should be a valid integer")
    assert message.endswith("got 'many'")


def test_wrong_choice(tmp_path):
    message = error_for(tmp_path, VALID.replace("resid_post, head", "resid_mid"))
    assert message.startswith("patch.sites.0: input should be 'resid_pre'")
    assert "got 'resid_mid'" in message


def test_missing_model_path(tmp_path):
    message = error_for(tmp_path, VALID.replace("clean: zoo:clean", "clean: ./no/such/model"))
    assert message.startswith("models.clean: model path './no/such/model' does not exist")


def test_hub_id_and_existing_directory_are_accepted(tmp_path):
    (tmp_path / "m").mkdir()
    text = VALID.replace("zoo:clean", "Qwen/Qwen3-4B").replace("zoo:corrupt", str(tmp_path / "m"))
    cfg = load_config(write(tmp_path, text))
    assert cfg.models.clean == "Qwen/Qwen3-4B" and cfg.models.corrupt == str(tmp_path / "m")


def test_missing_required_key(tmp_path):
    assert error_for(tmp_path, "name: t\n") == "models: required key is missing"


def test_top_level_must_be_a_mapping(tmp_path):
    assert error_for(tmp_path, "- a\n- b\n").startswith("expected a mapping")


def test_corrupted_model_needs_exactly_one_source(tmp_path):
    no_source = VALID.replace(", corrupt: zoo:corrupt", "")
    assert "models.corrupt is required" in error_for(tmp_path, no_source)
    both = VALID + "finetune: {enabled: true}\n"
    assert "not both" in error_for(tmp_path, both)


def test_overrides_apply_and_validate(tmp_path):
    path = write(tmp_path, VALID)
    assert load_config(path, ["eval.limit=7", "patch.layers=all"]).eval.limit == 7
    with pytest.raises(ConfigError, match=r"eval\.limit: input should be greater than 0, got 0"):
        load_config(path, ["eval.limit=0"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["eval.limit"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
