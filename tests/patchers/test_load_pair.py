"""load_pair from directories: a full corrupted model, a PEFT adapter, and bad paths."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from tiny_models import PROMPTS, perturbed, tiny_model, with_adapter

from patchers.cmap import run_cmap
from patchers.errors import PatchError
from patchers.models import load_pair


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    clean = tiny_model()
    clean.save_pretrained(root / "clean")
    perturbed(clean).save_pretrained(root / "corrupt")
    adapter = with_adapter(tiny_model())
    adapter.save_pretrained(root / "adapter")
    tiny_model(vocab_size=101).save_pretrained(root / "other_vocab")
    tiny_model("gpt2").save_pretrained(root / "gpt2")
    from transformers import T5Config

    T5Config(vocab_size=97, d_model=32, num_layers=2).save_pretrained(root / "t5")
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    return root


def test_full_model_pair(model_dirs):
    pair = load_pair(model_dirs / "clean", model_dirs / "corrupt")
    assert pair.adapter is None
    result = run_cmap(pair, PROMPTS, layers=[1], max_new_tokens=3)
    assert result.steps.height == 2 * 3


def test_adapter_pair_shares_the_base(model_dirs):
    pair = load_pair(model_dirs / "clean", model_dirs / "adapter", dtype="float32")
    assert isinstance(pair.corrupt, PeftModel)
    assert pair.corrupt.get_base_model() is pair.clean
    assert pair.adapter == "corrupt"
    # The adapter really changes the model: some corrupted argmax differs from the clean one.
    steps = run_cmap(pair, PROMPTS, max_new_tokens=4).steps
    assert (steps["y_clean"] != steps["y_corrupt"]).any()


def test_bfloat16_loading(model_dirs):
    pair = load_pair(model_dirs / "clean", model_dirs / "corrupt", dtype="bfloat16")
    assert pair.clean.dtype == torch.bfloat16
    assert run_cmap(pair, PROMPTS, layers=[0], max_new_tokens=2).steps.height == 4


@pytest.mark.parametrize(
    ("clean", "corrupt", "message"),
    [
        ("missing", "corrupt", "clean model not found: .*missing"),
        ("clean", "missing", "corrupted model not found"),
        ("clean", "empty", "has neither config.json .* nor adapter_config.json"),
        ("broken", "corrupt", "cannot read the config in .*broken"),
        ("clean", "other_vocab", r"vocab_size \(97 vs 101\)"),
        ("gpt2", "corrupt", r"configs differ: model_type \('gpt2' vs 'qwen3'\)"),
        ("clean", "gpt2", r"configs differ: model_type \('qwen3' vs 'gpt2'\)"),
        ("t5", "corrupt", "model_type 't5' is not a causal LM transformers can build"),
    ],
)
def test_bad_pairs_are_refused(model_dirs, clean, corrupt, message):
    with pytest.raises(PatchError, match=message):
        load_pair(model_dirs / clean, model_dirs / corrupt)


def test_unknown_dtype(model_dirs):
    with pytest.raises(PatchError, match="unknown dtype 'float8'"):
        load_pair(model_dirs / "clean", model_dirs / "corrupt", dtype="float8")


def test_different_tokenizers_are_refused(model_dirs, tmp_path):
    import shutil

    for name in ("clean", "corrupt"):
        shutil.copytree(model_dirs / name, tmp_path / name)
    for name, vocab in (("clean", {"a": 0, "b": 1}), ("corrupt", {"a": 1, "b": 0})):
        (tmp_path / name / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(PatchError, match="tokenizers differ"):
        load_pair(tmp_path / "clean", tmp_path / "corrupt")


def adapter_with_saved_head():
    """An adapter that also trains the LM head (peft's modules_to_save)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    peft_model = get_peft_model(tiny_model(), config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(0.1 * torch.randn_like(param))
    return peft_model.eval()


def assert_merged_on_load(peft_model, tmp_path) -> None:
    """Saved and loaded back, the adapter becomes a full corrupted model whose logits are the
    adapted ones, and the clean model stays bare."""
    from peft import PeftModel as Peft

    peft_model.save_pretrained(tmp_path / "adapter")
    tiny_model().save_pretrained(tmp_path / "clean")
    pair = load_pair(tmp_path / "clean", tmp_path / "adapter")
    assert pair.adapter is None and not isinstance(pair.corrupt, Peft)
    assert not any("lora" in name for name, _ in pair.clean.named_modules())
    steps = run_cmap(pair, PROMPTS, layers=[0], max_new_tokens=1).steps.sort("prompt_id")
    with torch.no_grad():
        expected = [int(peft_model(torch.tensor([p])).logits[0, -1].argmax()) for p in PROMPTS]
        fresh = tiny_model()  # the same weights as the saved clean model
        clean = [int(fresh(torch.tensor([p])).logits[0, -1].argmax()) for p in PROMPTS]
    assert steps["y_corrupt"].to_list() == expected
    assert steps["y_clean"].to_list() == clean


def test_an_adapter_with_a_saved_head_is_merged(tmp_path):
    """A module the adapter trains whole cannot take rows that join the batch at their layer:
    load_pair merges such an adapter into its own copy."""
    from patchers.models import ModelPair

    peft_model = adapter_with_saved_head()
    with pytest.raises(PatchError, match=r"trains 'lm_head' whole .*merge the adapter"):
        ModelPair(peft_model.get_base_model(), peft_model)
    assert_merged_on_load(peft_model, tmp_path)


def test_a_dora_adapter_is_merged_into_its_own_copy(tmp_path):
    """peft cannot mix DoRA with plain rows in one batch: load_pair merges it into a copy."""
    from peft import LoraConfig, get_peft_model

    from patchers.models import ModelPair

    dora = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    with torch.no_grad():
        for name, param in dora.named_parameters():
            if "lora_B" in name:
                param.add_(0.3 * torch.randn_like(param))
    dora.eval()
    with pytest.raises(PatchError, match=r"LoRA variant .* merge the adapter"):
        ModelPair(dora.get_base_model(), dora)
    assert_merged_on_load(dora, tmp_path)


# Accelerate's dispatch on one machine: layers 1 and 3 offloaded to disk, loaded at each forward
# by accelerate's own hooks, which then run beside the patcher's.
DEVICE_MAP = {
    "model.embed_tokens": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "cpu",
}


@pytest.mark.parametrize("corrupt", ["corrupt", "adapter"])
@pytest.mark.parametrize("site", ["resid_post", "head"])
def test_a_dispatched_pair_patches_as_the_plain_one(model_dirs, tmp_path, corrupt, site):
    """peft cannot attach an adapter to disk-offloaded weights: the adapter pair is dispatched
    to the CPU alone (accelerate's map, no offload)."""
    plain = load_pair(model_dirs / "clean", model_dirs / corrupt)
    device_map = DEVICE_MAP if corrupt == "corrupt" else dict.fromkeys(DEVICE_MAP, "cpu")
    dispatched = load_pair(
        model_dirs / "clean", model_dirs / corrupt, device_map=device_map, offload_folder=tmp_path
    )
    if corrupt == "corrupt":  # accelerate's hooks load the offloaded layers
        assert dispatched.clean.hf_device_map == device_map
        assert hasattr(dispatched.clean.model.layers[1], "_hf_hook")
    ours = run_cmap(dispatched, PROMPTS, site=site, max_new_tokens=4).steps
    expected = run_cmap(plain, PROMPTS, site=site, max_new_tokens=4).steps
    assert ours["token_id"].to_list() == expected["token_id"].to_list()
    assert (ours["dl_patch"] - expected["dl_patch"]).abs().max() < 1e-5


def test_an_adapter_on_disk_offloaded_layers_is_refused_leaving_nothing(
    model_dirs, tmp_path, monkeypatch
):
    """peft cannot attach to disk-offloaded weights (and its attempt copies them under the
    working directory): load_pair says so before it tries."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PatchError, match=r"offloads model.layers.1, model.layers.3 to disk"):
        load_pair(
            model_dirs / "clean",
            model_dirs / "adapter",
            device_map=DEVICE_MAP,
            offload_folder=tmp_path / "offload",
        )
    assert not (tmp_path / "tmp").exists()
