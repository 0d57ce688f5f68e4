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


def test_unknown_key_names_key_and_alternatives(tmp_path):
    message = error_for(tmp_path, VALID.replace("limit: 5", "limt: 5"))
    assert message.startswith("eval.limt: unknown key (expected one of: engine, suites")
    assert "limit" in message


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
