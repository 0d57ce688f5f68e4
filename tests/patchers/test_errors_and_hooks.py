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


def tiny_opt(seed: int = 0):
    """A family outside the site table (OPT: `model.decoder.layers`, no MLP module)."""
    from transformers import AutoModelForCausalLM, OPTConfig

    config = OPTConfig(
        vocab_size=97,
        hidden_size=64,
        ffn_dim=128,
        word_embed_proj_dim=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        initializer_range=0.2,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def test_a_model_without_decoder_layers_is_refused():
    gpt2 = tiny_model("gpt2")
    gpt2.transformer.h = torch.nn.Sequential(*gpt2.transformer.h)
    with pytest.raises(
        PatchError, match=r"GPT2LMHeadModel \('gpt2'\) has no decoder layers at 'transformer.h'"
    ):
        ModelPair(gpt2, gpt2)


def test_a_family_outside_the_table_goes_through_the_generic_path():
    """OPT is laid out from its module names, self-tested, then matches the reference."""
    from matching import assert_matches_reference
    from tiny_models import perturbed

    from patchers.reference import full_model_side
    from patchers.sites import layout_of

    clean = tiny_opt()
    corrupt = perturbed(clean, scale=0.1)
    layout = layout_of(clean)
    assert (layout.layers, layout.head, layout.mlp_out) == (
        "model.decoder.layers",
        "self_attn.out_proj",
        None,
    )
    sides = full_model_side(clean), full_model_side(corrupt)
    for site, heads in (("resid_post", None), ("head", [1])):
        result = run_cmap(
            ModelPair(clean, corrupt), PROMPTS, site=site, heads=heads, max_new_tokens=4
        )
        assert_matches_reference(result, *sides, site, PROMPTS, 4, heads)
    with pytest.raises(
        PatchError,
        match=r"model_type 'opt' has no 'mlp_out' site .*; it offers: resid_pre, resid_post, "
        "attn_out, head",
    ):
        run_cmap(ModelPair(clean, corrupt), PROMPTS, site="mlp_out")


def test_the_self_test_stops_an_engine_that_misses_the_reference(monkeypatch):
    """Break the transient reset: the generic path refuses to run instead of returning
    persistent-mode numbers as transient ones."""
    from tiny_models import perturbed

    import patchers.cmap

    monkeypatch.setattr(patchers.cmap, "_reset_newest", lambda *args: None)
    clean = tiny_opt()
    with pytest.raises(PatchError, match="does not reproduce a full forward of model_type 'opt'"):
        run_cmap(ModelPair(clean, perturbed(clean, scale=0.5)), PROMPTS, site="resid_pre")


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
