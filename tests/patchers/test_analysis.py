"""The model-diffing analyses (`patchers.analysis`) on tiny random models and a planted pair."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
from tiny_models import FAMILIES, tiny_model

from patchers.analysis.activations import lens_logits, logit_lens, recorded, token_ranks
from patchers.analysis.attribution import exact_head_effect, head_attribution, head_attributions
from patchers.analysis.directions import Edit, ablation, mean_difference, row_edits, steering
from patchers.analysis.divergence import first_divergent_step, token_divergence
from patchers.analysis.probes import probe_accuracy
from patchers.analysis.similarity import linear_cka, mean_cosine, relative_change
from patchers.reference import full_model_side

PROMPTS = [[5, 17, 42, 8, 23, 61, 3, 9], [11, 90, 7, 33, 2, 64], [40, 41, 12, 80, 6, 19, 27]]
PLANTED_LAYER, PLANTED_HEAD = 2, 1
STRENGTH = 6.0
# more prompts, of several lengths, for the statistics of the planted pair
MANY = [[(7 * i + 13 * j) % 97 for j in range(5 + i % 4)] for i in range(16)]


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_lens_at_the_last_layer_is_the_models_own_logits(family):
    model = tiny_model(family)
    side = full_model_side(model)
    last = model.config.num_hidden_layers - 1
    logits, acts = recorded(side, PROMPTS[0], "resid_post", [last])
    torch.testing.assert_close(lens_logits(model, acts[last]), logits, atol=1e-4, rtol=1e-4)
    ranks, probs = logit_lens(side, PROMPTS[0], [int(logits[-1].argmax())], [0, last])
    assert ranks[-1, 0] == 0 and 0 < probs[-1, 0] <= 1


def test_token_ranks_count_the_tokens_above():
    ranks, probs = token_ranks(torch.tensor([[0.0, 3.0, 1.0, 2.0]]), [1, 0, 3])
    assert ranks.tolist() == [[0, 3, 1]]
    assert probs.sum() < 1 and probs[0, 0] > probs[0, 2] > probs[0, 1]


def test_linear_cka_is_one_on_itself_and_blind_to_rotation_and_scale():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ rotation) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(50, 8, generator=generator)) < 0.5
    assert mean_cosine(x, 2 * x) == pytest.approx(1.0)
    assert relative_change(x, 1.5 * x) == pytest.approx(0.5)


def test_token_divergence_is_zero_on_itself_and_marks_where_two_models_part():
    clean = full_model_side(tiny_model())
    other = full_model_side(tiny_model(seed=5))
    ids = PROMPTS[0] + [4, 4, 4]
    same = token_divergence(clean, clean, ids, len(PROMPTS[0]))
    assert same["kl"].abs().max() < 1e-6 and not same["disagree"].any()
    differ = token_divergence(clean, other, ids, len(PROMPTS[0]))
    assert differ["token"].tolist() == [4, 4, 4] and (differ["kl"] > 1e-3).all()
    assert first_divergent_step([1, 2, 3], [1, 2, 4]) == 2
    assert first_divergent_step([1, 2], [1, 2, 5]) == 2
    assert first_divergent_step([1, 2], [1, 2]) is None


def test_steering_by_zero_changes_nothing_and_by_a_direction_changes_the_output():
    model = tiny_model()
    side = full_model_side(model)
    batch = torch.tensor([PROMPTS[0]])
    with torch.no_grad():
        plain = model.generate(batch, max_new_tokens=6, do_sample=False)
        direction = torch.randn(
            model.config.hidden_size, generator=torch.Generator().manual_seed(1)
        )
        with steering(model, 1, direction, 0.0):
            assert torch.equal(model.generate(batch, max_new_tokens=6, do_sample=False), plain)
        with steering(model, 1, torch.zeros_like(direction), 1.0):  # the hook, adding nothing
            assert torch.equal(model.generate(batch, max_new_tokens=6, do_sample=False), plain)
        with steering(model, 1, direction, 20.0):
            steered = side.forward(batch)
    assert not torch.allclose(steered, side.forward(batch))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_row_edits_steer_ablate_or_leave_each_row_as_its_own_batch_would(family):
    """One batch whose rows are steered at two layers, ablated, or left alone equals each
    row run on its own under `steering` / `ablation` (or under nothing)."""
    model = tiny_model(family)
    d = model.config.hidden_size
    generator = torch.Generator().manual_seed(3)
    direction, other = torch.randn(d, generator=generator), torch.randn(d, generator=generator)
    prompt = torch.tensor([PROMPTS[0]])
    edits = [Edit.steer(1, direction, 3.0), None, Edit.ablate(1, other), Edit.steer(0, other, 0.5)]
    with torch.no_grad():
        with row_edits(model, edits):
            together = model(input_ids=prompt.repeat(len(edits), 1)).logits
        alone = []
        for manager in (
            steering(model, 1, direction, 3.0),
            contextlib.nullcontext(),
            ablation(model, 1, other),
            steering(model, 0, other, 0.5),
        ):
            with manager:
                alone.append(model(input_ids=prompt).logits[0])
    torch.testing.assert_close(together, torch.stack(alone), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone[0], alone[1]) and not torch.allclose(alone[2], alone[1])
    with (
        pytest.raises(ValueError, match="row_edits has 4 rows, the batch 1"),
        row_edits(model, edits),
    ):
        model(input_ids=prompt)


def test_row_edits_follow_their_rows_when_finished_generations_leave_the_batch():
    """Batched greedy decoding with one edit per row (rows ending early and leaving the batch)
    gives each row the generation it gets alone under its own steering or ablation."""
    from harness.patch import greedy_generations

    model = tiny_model("llama")
    d = model.config.hidden_size
    generator = torch.Generator().manual_seed(5)
    direction = torch.randn(d, generator=generator)
    prompts = MANY[:6]
    free = greedy_generations(model, prompts, 10, frozenset({-1}))
    eos = frozenset({free[0][3], free[1][5]})  # rows end at different steps
    edits = [Edit.steer(1, direction, 2.0), None, Edit.ablate(2, direction),
             Edit.steer(0, direction, -1.0), None, Edit.ablate(1, direction)]  # fmt: skip
    together = greedy_generations(
        model,
        prompts,
        10,
        eos,
        batch_size=4,
        within=lambda rows: row_edits(model, [edits[i] for i in rows]),
    )
    managers = {
        0: lambda: steering(model, 1, direction, 2.0),
        2: lambda: ablation(model, 2, direction),
        3: lambda: steering(model, 0, direction, -1.0),
        5: lambda: ablation(model, 1, direction),
    }
    for row, prompt in enumerate(prompts):
        with managers.get(row, contextlib.nullcontext)():
            assert together[row] == greedy_generations(model, [prompt], 10, eos)[0], row
    lengths = {len(tokens) for tokens in together}
    assert min(lengths) < 10 and max(lengths) == 10, lengths
    assert together[1] == free[1][: len(together[1])]
    assert any(together[row] != free[row][: len(together[row])] for row in managers)


def linear_model():
    """A one-layer model whose logits are linear in the attention heads' outputs: no MLP
    (its down projection zero), no final norm."""
    model = tiny_model("llama", num_hidden_layers=1, num_key_value_heads=4)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.zero_()
    model.model.norm = torch.nn.Identity()
    return model


def test_attribution_equals_exact_patching_where_the_model_is_linear_in_the_heads():
    clean_model = linear_model()
    corrupt_model = copy.deepcopy(clean_model)
    with torch.no_grad():
        corrupt_model.model.layers[0].self_attn.v_proj.weight.mul_(-2.0)
    clean, corrupt = full_model_side(clean_model), full_model_side(corrupt_model)
    estimates, step = head_attribution(clean, corrupt, PROMPTS[0], [0])
    assert step["y_clean"] != step["y_corrupt"], "the test needs a step where the models differ"
    exact = [exact_head_effect(clean, corrupt, PROMPTS[0], 0, h) for h in range(4)]
    assert max(abs(e) for e in exact) > 0.1
    torch.testing.assert_close(estimates[0], torch.tensor(exact), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_attribution_at_several_steps_of_one_sequence_is_each_steps_own(family):
    """One batched pass over a teacher-forced sequence gives every step what a pass over
    that step's context alone gives."""
    clean_model = tiny_model(family)
    clean, corrupt = full_model_side(clean_model), full_model_side(tiny_model(family, seed=7))
    ids = PROMPTS[0] + PROMPTS[1]
    layers = list(range(clean_model.config.num_hidden_layers))
    positions = [3, 7, len(ids) - 1]
    together = head_attributions(clean, corrupt, ids, positions, layers)
    for position, (estimates, step) in zip(positions, together, strict=True):
        alone, alone_step = head_attribution(clean, corrupt, ids[: position + 1], layers)
        torch.testing.assert_close(estimates, alone, atol=1e-5, rtol=1e-4)
        assert step["y_clean"] == alone_step["y_clean"]
        assert step["y_corrupt"] == alone_step["y_corrupt"]
        assert step["dl_clean"] == pytest.approx(alone_step["dl_clean"], abs=1e-5)
        assert step["dl_corrupt"] == pytest.approx(alone_step["dl_corrupt"], abs=1e-5)
    assert any(float(e.abs().max()) > 1e-3 for e, _ in together)
    with pytest.raises(ValueError, match=r"positions must lie in 0\.\.13"):
        head_attributions(clean, corrupt, ids, [len(ids)], layers)


@pytest.fixture(scope="module")
def planted_head():
    """(clean, corrupted): the corrupted model is the clean one plus a rank-1 change of one
    head's value map at one layer."""
    clean = tiny_model("llama", num_key_value_heads=4, seed=3)
    corrupt = copy.deepcopy(clean)
    attn = corrupt.model.layers[PLANTED_LAYER].self_attn
    size = clean.config.head_dim
    generator = torch.Generator().manual_seed(4)
    value = torch.randn(size, generator=generator)
    reads = torch.randn(clean.config.hidden_size, generator=generator)
    with torch.no_grad():
        rows = slice(PLANTED_HEAD * size, (PLANTED_HEAD + 1) * size)
        attn.v_proj.weight[rows] += STRENGTH * torch.outer(value, reads) / reads.norm()
    return clean, corrupt


@pytest.fixture(scope="module")
def planted():
    """(clean, corrupted, planted vector): the corrupted model is the clean one plus a constant
    vector written into one layer's output (its MLP's output bias), along the
    direction the clean model's residuals there use least, twice their typical norm."""
    clean = tiny_model("llama", mlp_bias=True, seed=3)
    rows = residual_rows(clean)[PLANTED_LAYER]
    vector = torch.linalg.svd(rows, full_matrices=False).Vh[-1]
    vector = 2.0 * rows.norm(dim=-1).mean() * vector
    corrupt = copy.deepcopy(clean)
    with torch.no_grad():
        corrupt.model.layers[PLANTED_LAYER].mlp.down_proj.bias += vector
    return clean, corrupt, vector


def residual_rows(model, site: str = "resid_post"):
    layers = list(range(model.config.num_hidden_layers))
    per_prompt = [recorded(full_model_side(model), ids, site, layers)[1] for ids in MANY]
    return {layer: torch.cat([acts[layer] for acts in per_prompt]) for layer in layers}


def test_planted_pair_direction_similarity_and_probes_find_the_planted_layer(planted):
    clean, corrupt, vector = planted
    rows_clean, rows_corrupt = residual_rows(clean), residual_rows(corrupt)
    direction = mean_difference(rows_clean[PLANTED_LAYER], rows_corrupt[PLANTED_LAYER])
    assert torch.nn.functional.cosine_similarity(direction, vector, dim=0) >= 0.9
    change = [relative_change(rows_clean[n], rows_corrupt[n]) for n in range(4)]
    cka = [linear_cka(rows_clean[n], rows_corrupt[n]) for n in range(4)]
    assert change[:PLANTED_LAYER] == [0.0] * PLANTED_LAYER and min(change[PLANTED_LAYER:]) > 0.05
    assert cka[:PLANTED_LAYER] == pytest.approx([1.0] * PLANTED_LAYER)
    # CKA centres: blind to the constant shift itself, it sees the layers the shift moved
    assert max(cka[PLANTED_LAYER + 1 :]) < 1 - 1e-4, cka
    groups = np.concatenate([np.full(len(p), i) for i, p in enumerate(MANY)])
    before = probe_accuracy(rows_clean[0], rows_corrupt[0], groups)
    after = probe_accuracy(rows_clean[PLANTED_LAYER], rows_corrupt[PLANTED_LAYER], groups)
    assert before <= 0.6 and after >= 0.9, (before, after)


def test_a_planted_weight_change_is_found_as_the_layers_direction(planted_head):
    """The rank-1 change of one head's value map: what it adds to the layer's output lies along
    the head's output projection of the planted value direction; the mean difference of the
    residuals after the layer (MLP included) is that direction."""
    clean, corrupt = planted_head
    size = clean.config.head_dim
    value = torch.randn(size, generator=torch.Generator().manual_seed(4))
    heads = corrupt.model.layers[PLANTED_LAYER].self_attn.o_proj.weight
    vector = heads[:, PLANTED_HEAD * size : (PLANTED_HEAD + 1) * size].detach() @ value
    direction = mean_difference(residual_rows(clean)[PLANTED_LAYER],
                                residual_rows(corrupt)[PLANTED_LAYER])  # fmt: skip
    assert torch.nn.functional.cosine_similarity(direction, vector, dim=0) >= 0.9


def test_planted_pair_attribution_ranks_the_planted_head_first(planted_head):
    clean, corrupt = planted_head
    sides = full_model_side(clean), full_model_side(corrupt)
    layers = list(range(clean.config.num_hidden_layers))
    firsts = []
    for ids in MANY:
        estimates, step = head_attribution(*sides, ids, layers)
        if step["y_clean"] != step["y_corrupt"]:  # dl is 0 where they agree
            firsts.append(divmod(int(estimates.abs().argmax()), estimates.shape[1]))
    assert len(firsts) >= 4, "the planted change must change next tokens"
    assert firsts.count((PLANTED_LAYER, PLANTED_HEAD)) >= 0.75 * len(firsts), firsts


def test_planted_pair_ablating_the_direction_gives_back_the_clean_outputs(planted):
    clean, corrupt, _ = planted
    rows_clean, rows_corrupt = residual_rows(clean), residual_rows(corrupt)
    direction = mean_difference(rows_clean[PLANTED_LAYER], rows_corrupt[PLANTED_LAYER])
    prompts = MANY

    def greedy(model, ids):
        out = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)
        return out[0, len(ids) :].tolist()

    with torch.no_grad():
        clean_out = [greedy(clean, ids) for ids in prompts]
        corrupt_out = [greedy(corrupt, ids) for ids in prompts]
        with ablation(corrupt, PLANTED_LAYER, direction):
            ablated = [greedy(corrupt, ids) for ids in prompts]
    differ = [i for i in range(len(prompts)) if clean_out[i] != corrupt_out[i]]
    assert len(differ) >= 8, "the planted change must change the greedy outputs"
    # A random model is chaotic: the clean residuals' own small component along the direction,
    # removed too, flips some later tokens; the first ones all come back.
    assert all(ablated[i][0] == clean_out[i][0] for i in differ)
    restored = sum(ablated[i] == clean_out[i] for i in differ)
    assert restored > 0.5 * len(differ), (restored, len(differ))
