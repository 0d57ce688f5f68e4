"""Bad input gets a PatchError naming the problem; hooks never outlive their block."""

from __future__ import annotations

import pytest
import torch
from tiny_models import PROMPTS, tiny_model

from patchers.cmap import run_cmap
from patchers.errors import PatchError
from patchers.hooks import attach, capture_last, replace_last
from patchers.models import ModelPair
from patchers.sites import SITES


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"site": "resid_mid"}, "unknown site 'resid_mid'; known: resid_pre"),
        ({"layers": [4]}, "layer 4 out of range; the model has layers 0..3"),
        ({"layers": [-1]}, "layer -1 out of range"),
        ({"layers": []}, "no layers requested"),
        ({"site": "head", "heads": [4]}, "head 4 out of range; the model has heads 0..3"),
        ({"site": "resid_post", "heads": [0]}, "heads are only for the 'head' site"),
        ({"mode": "sticky"}, "unknown mode 'sticky'"),
        ({"max_new_tokens": 0}, "max_new_tokens and max_batch must be at least 1"),
    ],
)
def test_bad_requests_name_the_problem(kwargs, message, clean_model, corrupt_model):
    with pytest.raises(PatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_cmap(ModelPair(clean_model, corrupt_model), PROMPTS, **kwargs)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([], "no prompts given"),
        ([[1, 2], []], "prompt 1 is empty"),
        ([[1, 97]], "outside the vocab"),
    ],
)
def test_bad_prompts(prompts, message, clean_model, corrupt_model):
    with pytest.raises(PatchError, match=message):
        run_cmap(ModelPair(clean_model, corrupt_model), prompts)


def test_mismatched_vocabulary_is_refused(clean_model):
    other = tiny_model(vocab_size=101)
    with pytest.raises(PatchError, match=r"configs differ: vocab_size \(97 vs 101\)"):
        ModelPair(clean_model, other)


def test_mismatched_architecture_is_refused(clean_model):
    with pytest.raises(PatchError, match="num_hidden_layers"):
        ModelPair(clean_model, tiny_model(num_hidden_layers=3))
    with pytest.raises(PatchError, match="model_type"):
        ModelPair(clean_model, tiny_model("llama"))


def test_unsupported_architecture_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(PatchError, match="unsupported architecture 'gpt2'; supported"):
        ModelPair(gpt2, gpt2)


@pytest.mark.parametrize("site", SITES)
def test_hooks_are_removed_after_an_exception(site, clean_model):
    before = hook_count(clean_model)
    with pytest.raises(RuntimeError, match="boom"), attach(clean_model, site, 2, lambda a: None):
        assert hook_count(clean_model) == before + 1
        raise RuntimeError("boom")
    assert hook_count(clean_model) == before


def test_nested_hooks_remove_only_their_own(clean_model):
    before = hook_count(clean_model)
    with attach(clean_model, "resid_post", 0, lambda a: None):
        with attach(clean_model, "mlp_out", 1, lambda a: None):
            assert hook_count(clean_model) == before + 2
        assert hook_count(clean_model) == before + 1
    assert hook_count(clean_model) == before


@pytest.mark.parametrize("site", SITES)
def test_capture_and_replace_round_trip(site, clean_model):
    """Writing back what was captured changes nothing; writing something else changes logits."""
    ids = torch.tensor([PROMPTS[0]])
    store: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        with attach(clean_model, site, 1, capture_last(store)):
            plain = clean_model(ids).logits
        head = 2 if site == "head" else None
        with attach(clean_model, site, 1, replace_last(store["activation"], head)):
            same = clean_model(ids).logits
        with attach(clean_model, site, 1, replace_last(store["activation"] * 3, head)):
            changed = clean_model(ids).logits
    shape = (1, 4, 16) if site == "head" else (1, 64)
    assert store["activation"].shape == shape
    assert torch.equal(plain, same)
    assert torch.equal(plain[:, :-1], changed[:, :-1])  # earlier positions untouched
    assert not torch.allclose(plain[:, -1], changed[:, -1])


def test_attach_refuses_unknown_site_and_layer(clean_model):
    with pytest.raises(PatchError, match="unknown site"), attach(clean_model, "x", 0, print):
        pass
    with (
        pytest.raises(PatchError, match="layer 7 out of range"),
        attach(clean_model, "head", 7, print),
    ):
        pass
