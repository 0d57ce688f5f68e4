# ruff: noqa: F811 (pytest fixtures imported from another test module)
"""The analyze stage on a patched run of a tiny pair: every table, the switches, bad input."""

from __future__ import annotations

import json

import polars as pl
import pytest

from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.pipeline.analysis import ANALYSES, analyze_items, headline, run_analyze
from harness.pipeline.patching import run_patch_stage
from harness.preflight import check_experiment
from tests.harness.test_patch_checks import one_thread, pair_dirs  # noqa: F401 fixtures
from tests.harness.test_report import write_canned_run


def config(tmp_path, pair_dirs, corrupt: str = "corrupt", **analyze) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "canned",
            "output_dir": str(tmp_path),
            "models": {"clean": pair_dirs["clean"], "corrupt": pair_dirs[corrupt]},
            "eval": {"level": "demo", "max_new_tokens": 8},
            "patch": {"layers": [0], "max_prompts_per_suite": 6, "max_controls_per_suite": 4},
            "analyze": {"max_items_per_suite": 6, "top_k_heads": 3, "alphas": [1.0, 8.0]} | analyze,
        }
    )


@pytest.fixture(scope="module")
def patched_run(tmp_path_factory, pair_dirs):
    root = tmp_path_factory.mktemp("analyze")
    run = write_canned_run(root, patched=False)
    cfg = config(root, pair_dirs)
    run_patch_stage(cfg, pair_dirs["clean"], pair_dirs["corrupt"], run / "eval", run / "patch",
                    lambda _: None, lambda _: None)  # fmt: skip
    return root, run


@pytest.mark.parametrize("corrupt", ["corrupt", "adapter"])
def test_every_analysis_writes_its_table(patched_run, pair_dirs, corrupt, tmp_path):
    """On a full corrupted model and on a LoRA adapter over the clean one."""
    root, _ = patched_run
    cfg = config(root, pair_dirs, corrupt)
    out = tmp_path / "analyze"
    summary = run_analyze(cfg, pair_dirs["clean"], pair_dirs[corrupt], out, print)
    assert set(summary["seconds"]) == set(ANALYSES)
    tables = {p.stem: pl.read_parquet(p) for p in out.glob("*.parquet")}
    assert set(tables) == {"divergence", "lens", "similarity", "probes", "directions",
                           "steering", "attribution"}  # fmt: skip
    assert all(t.height for t in tables.values()), {k: t.height for k, t in tables.items()}
    divergence = tables["divergence"]
    assert set(divergence["response"]) == {"clean", "corrupt"} and (divergence["kl"] >= 0).all()
    layers = list(range(4))
    resid = tables["similarity"].filter(pl.col("site") == "resid_post")
    assert sorted(set(resid["layer"])) == layers and resid["cka"].is_between(0, 1 + 1e-9).all()
    heads = tables["similarity"].filter(pl.col("site") == "head")
    assert heads.height == len(set(heads["suite"])) * 4 * 2 > 0  # layers x heads per suite
    assert tables["probes"]["accuracy"].is_between(0, 1).all()
    assert tables["directions"]["layer"].to_list() == layers
    assert (tables["directions"]["norm"] > 0).all()
    steering = tables["steering"]
    assert {"steer", "ablate"} == set(steering["intervention"])
    searched = steering.filter((pl.col("items") == "search") & (pl.col("intervention") == "steer"))
    assert set(searched["alpha"]) == {1.0, 8.0}
    held = steering.filter(pl.col("items") == "held_out")["prompt_id"]
    assert set(searched["prompt_id"]).isdisjoint(held)  # fitted on other items than scored
    assert set(tables["lens"]["layer"]) == set(layers)
    # the lens's last layer is each model's own next-token choice: y_clean top-1 for clean
    last = tables["lens"].filter(pl.col("layer") == 3)
    assert (last.filter(pl.col("model") == "clean")
            .filter(pl.col("token") == "y_clean")["rank"] == 0).all()  # fmt: skip
    assert (last.filter(pl.col("model") == "corrupt")
            .filter(pl.col("token") == "y_corrupt")["rank"] == 0).all()  # fmt: skip
    attribution = tables["attribution"]
    assert attribution.height == 4 * 2 and attribution["exact_cts"].is_not_null().sum() == 3
    written = json.loads((out / "analyze.json").read_text())
    assert written["headline"] == json.loads(json.dumps(headline(tables), default=str))
    assert "mean_kl" in written["headline"]


def test_switched_off_analyses_are_not_run(patched_run, pair_dirs, tmp_path):
    root, _ = patched_run
    off = {name: False for name in ANALYSES if name != "divergence"}
    cfg = config(root, pair_dirs, **off)
    out = tmp_path / "only"
    summary = run_analyze(cfg, pair_dirs["clean"], pair_dirs["corrupt"], out, print)
    assert list(summary["seconds"]) == ["divergence"]
    assert sorted(p.name for p in out.glob("*.parquet")) == ["divergence.parquet"]


def test_bad_input_is_one_line_before_the_weights_load(patched_run, pair_dirs, tmp_path):
    root, _ = patched_run
    cfg = config(root, pair_dirs, layers=[0, 9])
    with pytest.raises(HarnessError, match=r"analyze\.layers: 9 out of range: the model has 4 lay"):
        run_analyze(cfg, pair_dirs["clean"], "/not/read/before/the/check", tmp_path, print)
    with pytest.raises(HarnessError, match=r"analyze\.layers: 9 out of range"):  # harness run
        check_experiment(cfg)
    bare = config(tmp_path, pair_dirs)
    with pytest.raises(HarnessError, match=r"prompts\.parquet: not found"):
        run_analyze(bare, pair_dirs["clean"], pair_dirs["corrupt"], tmp_path / "x", print)


def test_items_are_capped_per_suite_and_kind():
    prompts = pl.DataFrame(
        {"suite": ["a"] * 5 + ["b"] * 2, "kind": ["flagged"] * 3 + ["control"] * 4}
    )
    capped = analyze_items(prompts, 2)
    assert capped.group_by("suite", "kind").len().sort("suite", "kind")["len"].to_list() == [
        2,
        2,
        2,
    ]
    assert analyze_items(prompts, None).height == 7


def test_the_report_has_a_diffing_section_and_the_summary_its_headline(patched_run, pair_dirs):
    from harness.report import build_report

    root, run = patched_run
    run_analyze(config(root, pair_dirs), pair_dirs["clean"], pair_dirs["corrupt"],
                run / "analyze", print)  # fmt: skip
    built = build_report(run)
    page = built.html.read_text()
    assert "<h2>Model diffing</h2>" in page and "Similarity per layer" in page
    assert "mean_kl" in built.summary["analyze"]
    assert set(built.summary["analyze"]["seconds"]) == set(ANALYSES)
    drawn = {p.name for p in built.figures}
    figures = {
        f"diffing_{name}.png" for name in ("divergence", "lens", "similarity", "probes", "steering")
    } | {"head_attribution.png"}
    assert figures <= drawn and all(f"figures/{name}" in page for name in figures)


def test_steering_hooks_the_clean_model_and_ablation_the_corrupted_one(
    patched_run, pair_dirs, tmp_path, monkeypatch
):
    import patchers.analysis.directions as directions

    hooked = []
    real = directions.row_edits

    def recording(model, edits, *args):
        for edit in edits:
            kind = "steer" if edit.add is not None else "ablate"
            assert (edit.add is None) != (edit.remove is None)
            hooked.append((kind, model))
        return real(model, edits, *args)

    monkeypatch.setattr(directions, "row_edits", recording)
    root, _ = patched_run
    off = {name: False for name in ANALYSES if name != "directions"}
    cfg = config(root, pair_dirs, layers=[1], **off)
    from harness.patch import load_models
    from harness.pipeline.analysis import _item
    from harness.pipeline.analyzer import Analyzer

    models = load_models(pair_dirs["clean"], pair_dirs["corrupt"])
    items = pl.read_parquet(root / "canned" / "patch" / "prompts.parquet")
    analyzer = Analyzer(models, [_item(models, cfg, r) for r in items.iter_rows(named=True)], cfg)
    assert analyzer.directions()
    kinds = {name: {id(model) for n, model in hooked if n == name} for name in ("steer", "ablate")}
    assert kinds == {"steer": {id(models.pair.clean)}, "ablate": {id(models.pair.corrupt)}}


@pytest.mark.parametrize("corrupt", ["corrupt", "adapter"])
def test_exact_head_cts_is_the_reference_single_step_patch_at_the_screened_steps(
    patched_run, pair_dirs, corrupt
):
    """The engine's teacher-forced CTS of each top head, averaged over the screened steps,
    equals full-forward patching of that head at each step's context (the reference)."""
    from harness.patch import load_models
    from harness.pipeline.analysis import _item
    from harness.pipeline.analyzer import Analyzer
    from patchers.analysis.attribution import exact_head_effect, head_attribution

    root, _ = patched_run
    off = {name: False for name in ANALYSES if name != "attribution"}
    cfg = config(root, pair_dirs, corrupt, attribution_steps=2, **off)
    models = load_models(pair_dirs["clean"], pair_dirs[corrupt])
    items = pl.read_parquet(root / "canned" / "patch" / "prompts.parquet")
    analyzer = Analyzer(models, [_item(models, cfg, r) for r in items.iter_rows(named=True)], cfg)
    steps = analyzer.defined_steps()
    per_item: dict[int, int] = {}
    for item, _ in steps:
        per_item[id(item)] = per_item.get(id(item), 0) + 1
    assert steps and max(per_item.values()) <= 2 and max(per_item.values()) == 2
    table = analyzer.attribution()["attribution"]
    exact = table.filter(pl.col("exact_cts").is_not_null())
    assert exact.height == 3
    for row in exact.iter_rows(named=True):
        values = []
        for item, step in steps:
            context = (item.prompt + item.clean)[: len(item.prompt) + step]
            _, logits = head_attribution(analyzer.clean, analyzer.corrupt, context, [0])
            denominator = logits["dl_corrupt"] - logits["dl_clean"]
            effect = exact_head_effect(
                analyzer.clean, analyzer.corrupt, context, row["layer"], row["head"]
            )
            values.append(effect / denominator)
        assert row["exact_steps"] == row["steps"] == len(values)
        assert row["exact_cts"] == pytest.approx(sum(values) / len(values), abs=1e-4)


def test_patcher_modules_are_all_in_the_patch_stages_code_and_the_analyses_are_not():
    import pkgutil

    import patchers
    from harness.pipeline.stages import ANALYZE_CODE, PATCH_CODE

    modules = {f"patchers.{m.name}" for m in pkgutil.iter_modules(patchers.__path__)}
    assert modules - {"patchers.analysis"} <= set(PATCH_CODE)
    assert "patchers.analysis" not in PATCH_CODE and "patchers.analysis" in ANALYZE_CODE


def test_a_run_with_nothing_patched_is_analysed_as_nothing(pair_dirs, tmp_path):
    from harness.pipeline.patching import ITEM_SCHEMA
    from harness.report.diffing import diffing_section

    cfg = config(tmp_path, pair_dirs)
    (cfg.run_dir / "patch").mkdir(parents=True)
    pl.DataFrame(schema=ITEM_SCHEMA).write_parquet(cfg.run_dir / "patch" / "prompts.parquet")
    out = cfg.run_dir / "analyze"
    summary = run_analyze(cfg, pair_dirs["clean"], pair_dirs["corrupt"], out, print)
    assert summary["items"] == 0 and not list(out.glob("*.parquet"))
    assert "nothing to analyse" in diffing_section(cfg.run_dir, tmp_path / "fig", [])[0]


# accelerate's placement of the tiny pair: two of its four layers offloaded to disk
OFFLOADED = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
             "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "cpu",
             "model.rotary_emb": "cpu", "lm_head": "cpu"}  # fmt: skip


def test_the_analyses_on_a_dispatched_pair_equal_those_on_one_device(
    patched_run, pair_dirs, tmp_path
):
    """accelerate's device map (layers offloaded to disk, loaded by its hooks) changes no
    table: the analyses' hooks and inputs follow the modules wherever they are."""
    import dataclasses

    from harness.patch import load_models
    from harness.pipeline.analysis import _item
    from harness.pipeline.analyzer import Analyzer
    from patchers import load_pair

    root, _ = patched_run
    cfg = config(root, pair_dirs, layers=[0, 1, 2, 3], alphas=[1.0])
    plain = load_models(pair_dirs["clean"], pair_dirs["corrupt"])
    dispatched = dataclasses.replace(
        plain,
        pair=load_pair(
            pair_dirs["clean"], pair_dirs["corrupt"], device_map=OFFLOADED, offload_folder=tmp_path
        ),
    )
    assert hasattr(dispatched.pair.clean.model.layers[1], "_hf_hook")
    rows = pl.read_parquet(root / "canned" / "patch" / "prompts.parquet").iter_rows(named=True)
    rows = list(rows)
    tables = {}
    for name, models in (("plain", plain), ("dispatched", dispatched)):
        analyzer = Analyzer(models, [_item(models, cfg, r) for r in rows], cfg)
        tables[name] = {}
        for analysis in ANALYSES:
            tables[name] |= getattr(analyzer, analysis)()
    assert set(tables["plain"]) == set(tables["dispatched"]) and len(tables["plain"]) == 7
    assert all(table.height for table in tables["plain"].values())
    for name, table in tables["plain"].items():
        other = tables["dispatched"][name]
        assert table.columns == other.columns and table.height == other.height, name
        for column in table.columns:
            a, b = table[column], other[column]
            if a.dtype == pl.Float64:
                assert (
                    (a - b).abs().fill_null(0) < 1e-4
                ).all() and a.null_count() == b.null_count(), (name, column)
            else:
                assert a.to_list() == b.to_list(), (name, column)
