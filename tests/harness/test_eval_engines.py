"""The evaluation engines: prompt format in the lm-eval classes, serving plan, vLLM vs HF parity.

The vLLM tests share one evaluation per engine (module fixture) on tiny random models: a clean
Qwen3 (init scale 0.1 so greedy outputs vary) and a random LoRA adapter on it as the corrupted
model. Both vLLM paths, in process and through the server, are held to the HF reference.
"""

from __future__ import annotations

import polars as pl
import pytest

from harness.config import ExperimentConfig, ServeConfig
from harness.endpoints import ModelEntry, plan_servers, resolve_models
from harness.errors import HarnessError
from tasks.prompt_format import PromptFormat
from tests.conftest import save_tiny_qwen3


def save_random_adapter(base, path, seed: int = 1):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, lora)
    peft_model.peft_config["default"].base_model_name_or_path = str(base.resolve())
    peft_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory, chat_tokenizer):
    root = tmp_path_factory.mktemp("pair")
    clean = save_tiny_qwen3(root / "clean", chat_tokenizer, layers=2, init=0.1)
    return clean, save_random_adapter(clean, root / "adapter")


def config(tmp_path, clean, corrupt, **eval_overrides) -> ExperimentConfig:
    settings = {
        "level": "demo",
        "limit": 2,
        "max_new_tokens": 24,
        "batch_size": 8,
        "bootstrap_samples": 100,
        "serve": {"dtype": "float32", "kv_cache_gb": 0.5},
    }
    return ExperimentConfig.model_validate(
        {
            "name": "t",
            "output_dir": str(tmp_path),
            "finetune": {"enabled": False},
            "models": {"clean": str(clean), "corrupt": str(corrupt)},
            "eval": settings | eval_overrides,
        }
    )


def test_served_lm_renders_with_the_prompt_format_and_pins_greedy(tiny_model_dir, chat_tokenizer):
    from harness.lm_models import ServedLM

    fmt = PromptFormat(system_prompt="Be brief.", enable_thinking=False)
    lm = ServedLM("http://127.0.0.1:9/v1", "clean", str(tiny_model_dir), prompt_format=fmt)
    chat = [{"role": "user", "content": "Solve for x: 2x + 3 = 7"}]
    rendered = lm.apply_chat_template(chat)
    assert rendered == fmt.render(chat_tokenizer, "Solve for x: 2x + 3 = 7")
    assert "Be brief." in rendered and rendered.endswith("<think>\n\n</think>\n\n")
    context, continuation = lm._encode_pair(rendered, "Paris")
    assert context == fmt.encode(chat_tokenizer, "Solve for x: 2x + 3 = 7")
    assert continuation == chat_tokenizer.encode("Paris", add_special_tokens=False)
    payload = lm._create_payload(
        [context], generate=True, gen_kwargs={"max_gen_toks": 5000, "until": ["<|im_end|>"]}
    )
    assert payload["temperature"] == 0 and payload["top_k"] == 0 and payload["top_p"] == 1
    assert payload["repetition_penalty"] == 1.0 and payload["max_tokens"] < 2048 - len(context) + 1


def test_plan_puts_adapters_on_the_clean_engine_and_serialises_logprobs_on_cpu(tmp_path, pair):
    clean, adapter = pair
    entries = resolve_models({"clean": str(clean), "corrupt": str(adapter)})
    assert entries[1] == ModelEntry("corrupt", str(adapter), base=str(clean.resolve()))
    specs, where = plan_servers(entries, ServeConfig(), tmp_path / "merged", gpu=False)
    assert len(specs) == 1 and [m.name for m in specs[0].loras] == ["corrupt"]
    assert where == {"clean": (0, "clean", True), "corrupt": (0, "corrupt", True)}
    _, on_gpu = plan_servers(entries, ServeConfig(), tmp_path / "merged", gpu=True)
    assert not any(serial for _, _, serial in on_gpu.values())
    specs, where = plan_servers(entries, ServeConfig(), tmp_path / "merged", lora=False, gpu=False)
    assert len(specs) == 2 and not specs[0].loras and where["corrupt"] == (1, "corrupt", False)
    assert (tmp_path / "merged" / "corrupt" / "config.json").is_file()


def test_models_need_a_clean_full_weight_model(tmp_path, pair):
    clean, adapter = pair
    with pytest.raises(HarnessError, match="one named 'clean'"):
        resolve_models({"corrupt": str(clean)})
    with pytest.raises(HarnessError, match="must be full weights"):
        resolve_models({"clean": str(adapter)})
    with pytest.raises(HarnessError, match="does not exist"):
        resolve_models({"clean": str(clean), "v2": str(tmp_path / "missing")})


def test_hf_rerun_resumes_from_the_request_cache(tmp_path, pair, monkeypatch):
    from harness.evaluate import run_eval
    from harness.lm_models import LocalHFLM

    clean, adapter = pair
    cfg = config(tmp_path, clean, adapter, limit=1, max_new_tokens=8)
    first = run_eval(cfg, engine="hf")
    assert (tmp_path / "t" / "eval" / "records.parquet").is_file()

    def refuse(self, requests, *args, **kwargs):
        raise AssertionError(f"{len(requests)} requests were not served from the cache")

    monkeypatch.setattr(LocalHFLM, "generate_until", refuse)
    monkeypatch.setattr(LocalHFLM, "_loglikelihood_tokens", refuse)
    heard = []
    again = run_eval(
        cfg, engine="hf", progress=lambda **kw: heard.append((kw["done"], kw["total"]))
    )
    assert heard == [(0, 2), (1, 2), (1, 2), (2, 2)]  # each model as it starts and ends
    assert again.records.drop("metrics").equals(first.records.drop("metrics"))
    # answers served from the cache keep the finish reasons recorded when they were generated
    generated = again.records.filter(pl.col("output_type") == "generate_until")
    assert generated["finish_reason"].null_count() == 0
    assert set(generated["finish_reason"]) <= {"stop", "length"}
    assert (generated["n_tokens"] <= 8).all() and (generated["n_tokens"] > 0).all()
    cut = generated.filter(pl.col("finish_reason") == "length")
    assert (cut["n_tokens"] == 8).all() and cut.height > 0  # a random model rarely stops
    assert not cut["correct"].any()
    assert (tmp_path / "t" / "eval" / "truncated.parquet").is_file()
    # a changed dtype is a different engine: its answers are not the cached ones
    bf16 = config(tmp_path, clean, adapter, limit=1, max_new_tokens=8, serve={"dtype": "bfloat16"})
    with pytest.raises(AssertionError, match="not served from the cache"):
        run_eval(bf16, engine="hf")


KILLED_RUN = """
import json, sys, time
from pathlib import Path

from harness.config import ExperimentConfig
from harness.evaluate import run_eval
from harness.inprocess import InProcessLM


def main():
    cfg = ExperimentConfig.model_validate_json(Path(sys.argv[1]).read_text())
    marker = Path(sys.argv[2])
    run = InProcessLM._run
    calls = []

    def second_chunk_hangs(self, prompts, params, *loras):
        calls.append(len(prompts))
        if len(calls) == 2:  # the first chunk's answers are in the cache by now
            marker.write_text(json.dumps(calls))
            time.sleep(600)
        return run(self, prompts, params, *loras)

    InProcessLM._run = second_chunk_hangs
    run_eval(cfg, models={"clean": cfg.models.clean}, engine="vllm")


if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_in_process_run_killed_mid_model_resumes_with_the_answers_it_had(
    tmp_path, pair, monkeypatch
):
    """SIGKILL during a model's second chunk: the re-run asks the engine only for the rest."""
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    from sqlitedict import SqliteDict

    from harness.evaluate import run_eval
    from harness.inprocess import InProcessLM

    clean, adapter = pair
    cfg = config(
        tmp_path, clean, adapter, suites=["related"], limit=3, max_new_tokens=8, batch_size=2
    )
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "killed_run.py").write_text(KILLED_RUN)
    marker, log = tmp_path / "second_chunk", (tmp_path / "child.log").open("w")
    child = subprocess.Popen(
        [sys.executable, str(tmp_path / "killed_run.py"), str(tmp_path / "cfg.json"), str(marker)],
        cwd=Path(__file__).parents[2],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 400
        while not marker.exists():
            assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the child never reached its second chunk"
            time.sleep(0.5)
    finally:
        child.kill()  # SIGKILL: no handler, no cleanup
        child.wait()
    assert json.loads(marker.read_text()) == [2, 2]
    [db] = (tmp_path / "t" / "eval" / "cache").glob("clean-*_rank0.db")
    with SqliteDict(str(db), flag="r") as cache:
        keys = list(cache.keys())
        answers = {k: cache[k] for k in keys if not k.startswith("finish:")}
        finishes = [cache[k] for k in keys if k.startswith("finish:")]
    assert len(answers) == 2 and len(finishes) == 2  # the first chunk survived the kill
    assert all(f["finish_reason"] in {"stop", "length"} for f in finishes)

    sent = []
    run = InProcessLM._run

    def counting(self, prompts, params, *loras):
        sent.append(len(prompts))
        return run(self, prompts, params, *loras)

    monkeypatch.setattr(InProcessLM, "_run", counting)
    again = run_eval(cfg, models={"clean": str(clean)}, engine="vllm")
    assert again.records.height == 6 and sent == [2, 2]  # 6 prompts, 2 of them from the cache
    assert set(answers.values()) <= set(again.records["response"])
    assert again.records["finish_reason"].null_count() == 0
    assert (again.records["n_tokens"] <= 8).all()
    cut = again.records.filter(pl.col("finish_reason") == "length")
    assert (cut["n_tokens"] == 8).all() and not cut["correct"].any()


def comparable(text: str) -> str:
    # vLLM's incremental detokenizer withholds an unfinished UTF-8 sequence at the end of an
    # output; HF decodes it as U+FFFD. Random byte-level models emit such bytes.
    return text.rstrip("\ufffd")


VLLM_ENGINES = ["vllm", "vllm-server"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pair):
    """One evaluation per engine, same models and config."""
    from harness.evaluate import run_eval

    clean, adapter = pair
    out = tmp_path_factory.mktemp("engines")
    return {
        engine: run_eval(config(out, clean, adapter), engine=engine, out_dir=out / engine)
        for engine in (*VLLM_ENGINES, "hf")
    }


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("engine", VLLM_ENGINES)
def test_vllm_eval_writes_every_table_for_every_model_and_suite(runs, engine):
    run = runs[engine]
    records = run.records
    assert set(records["model"]) == {"clean", "corrupt"}
    assert set(records["suite"]) == {"related", "unrelated_math", "general"}
    assert records.filter(pl.col("output_type") == "multiple_choice").height == 2 * 2
    for name in ("records", "summary", "by_task", "flagged", "drift", "logprobs"):
        assert (run.out_dir / f"{name}.parquet").is_file(), name
    assert set(run.summary["model"]) == {"clean", "corrupt"}
    drift = run.drift.row(0, named=True)
    assert drift["model"] == "corrupt" and drift["gap_n"] > 0
    assert drift["likelihood_gap"] is not None and drift["likelihood_gap"] != 0
    assert run.seconds["startup"] > 0
    generated = records.filter(pl.col("output_type") == "generate_until")
    assert generated["finish_reason"].null_count() == 0 and generated["n_tokens"].min() > 0
    assert (
        records.filter(pl.col("output_type") == "multiple_choice")["finish_reason"].is_null().all()
    )
    cut = generated.filter(pl.col("finish_reason") == "length")
    assert (cut["n_tokens"] == 24).all() and not cut["correct"].any()


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("engine", VLLM_ENGINES)
def test_vllm_and_hf_agree_on_greedy_outputs_and_choices(runs, engine):
    served, reference = runs[engine], runs["hf"]
    keys = ["model", "task", "doc_id"]
    joined = served.records.join(reference.records, on=keys, suffix="_hf")
    assert joined.height == served.records.height == reference.records.height
    assert (joined["prompt"] == joined["prompt_hf"]).all(), "both paths must see one prompt"
    same = [
        comparable(a) == comparable(b)
        for a, b in zip(joined["response"], joined["response_hf"], strict=True)
    ]
    assert sum(same) / len(same) >= 0.95, joined.filter(~pl.Series(same)).select(keys)
    assert len({comparable(r) for r in joined["response"]}) > 3, "outputs should vary"
    alike = joined.filter(pl.Series(same) & (pl.col("output_type") == "generate_until"))
    finish = ["finish_reason", "n_tokens", "finish_reason_hf", "n_tokens_hf"]
    assert (alike["finish_reason"] == alike["finish_reason_hf"]).all(), alike.select(finish)
    assert (alike["n_tokens"] == alike["n_tokens_hf"]).all(), alike.select(finish)
    choices = joined.filter(pl.col("output_type") == "multiple_choice")
    assert (choices["correct"] == choices["correct_hf"]).all(), "loglikelihood choices differ"
    gap_served = served.drift["likelihood_gap"][0]
    gap_hf = reference.drift["likelihood_gap"][0]
    assert gap_served == pytest.approx(gap_hf, rel=0.05, abs=0.02)


@pytest.mark.slow
@pytest.mark.vllm
def test_in_process_merged_weights_answer_like_the_lora_module(tmp_path, runs, pair):
    """``--merged``: a second in-process engine, built after the first is shut down."""
    from harness.evaluate import run_eval

    clean, adapter = pair
    merged = run_eval(config(tmp_path, clean, adapter), engine="vllm", lora=False)
    assert (tmp_path / "t" / "eval" / "merged" / "corrupt" / "config.json").is_file()
    keys = ["model", "task", "doc_id"]
    joined = merged.records.join(runs["vllm"].records, on=keys, suffix="_lora")
    assert joined.height == merged.records.height == runs["vllm"].records.height
    same = (joined["response"] == joined["response_lora"]).mean()
    assert same >= 0.95, joined.filter(pl.col("response") != pl.col("response_lora"))


@pytest.fixture(scope="module")
def zoo_runs(tmp_path_factory, zoo):
    """The zoo's two models on a few documents of every suite, through each engine."""
    from harness.evaluate import run_eval

    out = tmp_path_factory.mktemp("zoo-engines")
    cfg = config(out, str(zoo.clean), str(zoo.corrupt), limit=8, max_new_tokens=160)
    return {
        engine: run_eval(cfg, engine=engine, out_dir=out / engine)
        for engine in (*VLLM_ENGINES, "hf")
    }


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("engine", VLLM_ENGINES)
def test_zoo_corrupted_model_is_worse_on_the_related_suite(zoo_runs, engine):
    summary = zoo_runs[engine].summary.filter(pl.col("suite") == "related")
    accuracy = dict(zip(summary["model"], summary["accuracy"], strict=True))
    assert accuracy["corrupt"] < accuracy["clean"]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("engine", VLLM_ENGINES)
def test_zoo_models_answer_alike_on_vllm_and_hf(zoo_runs, engine):
    """Issue #5's parity bar: >= 95 % identical greedy outputs for the zoo models."""
    joined = zoo_runs[engine].records.join(
        zoo_runs["hf"].records, on=["model", "task", "doc_id"], suffix="_hf"
    )
    assert joined.height == zoo_runs["hf"].records.height > 50
    same = (joined["response"] == joined["response_hf"]).mean()
    assert same >= 0.95, joined.filter(pl.col("response") != pl.col("response_hf"))


def test_continuation_logprob_sums_the_continuation_and_checks_it_is_greedy():
    from types import SimpleNamespace as Logprob

    from harness.inprocess import EngineError, continuation_logprob

    ids = [5, 6, 7, 8]
    prompt_logprobs = [
        None,
        {6: Logprob(logprob=-0.5, rank=1)},
        {7: Logprob(logprob=-1.0, rank=1)},
        {8: Logprob(logprob=-2.0, rank=3), 9: Logprob(logprob=-0.1, rank=1)},
    ]
    assert continuation_logprob(ids, prompt_logprobs, 2) == (-3.0, False)
    assert continuation_logprob(ids, prompt_logprobs, 1) == (-3.5, False)
    assert continuation_logprob(ids[:3], prompt_logprobs[:3], 1) == (-1.5, True)
    with pytest.raises(EngineError, match="at least one context token"):
        continuation_logprob(ids, prompt_logprobs, 0)


def test_in_process_engine_takes_the_server_settings(tmp_path):
    from harness.inprocess import EngineError, engine_kwargs
    from harness.serve import LoraModule, ServerSpec

    spec = ServerSpec("m", "clean", ServeConfig(dtype="float32", max_model_len=512))
    spec.loras.append(LoraModule("corrupt", tmp_path, 16))
    cpu = engine_kwargs(spec, gpu=False)
    assert cpu["kv_cache_memory_bytes"] == 2 * 2**30 and "gpu_memory_utilization" not in cpu
    assert cpu["enable_lora"] and cpu["max_lora_rank"] == 16 and cpu["max_model_len"] == 512
    assert not cpu["trust_remote_code"]
    assert engine_kwargs(spec, gpu=True)["gpu_memory_utilization"] == 0.9
    with pytest.raises(EngineError, match="one engine per replica"):
        engine_kwargs(ServerSpec("m", "c", ServeConfig(data_parallel_size=2)), gpu=False)


def test_cpu_engines_without_lora_run_eagerly_unless_told_otherwise(tmp_path):
    """vLLM compiles a CPU engine without LoRA for 15-40 s; with LoRA it never compiles."""
    from harness.inprocess import engine_kwargs
    from harness.serve import LoraModule, ServerSpec

    def eager(gpu: bool, lora: bool, setting: bool | None = None) -> bool | None:
        spec = ServerSpec("m", "clean", ServeConfig(enforce_eager=setting))
        if lora:
            spec.loras.append(LoraModule("corrupt", tmp_path, 8))
        return engine_kwargs(spec, gpu=gpu).get("enforce_eager")

    assert eager(gpu=False, lora=False) is True
    assert eager(gpu=False, lora=True) is None  # vLLM's own mode for LoRA engines on CPU
    assert eager(gpu=True, lora=False) is None  # compiled, with CUDA graphs
    assert eager(gpu=False, lora=False, setting=False) is None
    assert eager(gpu=True, lora=True, setting=True) is True


def test_the_models_of_one_engine_answer_together(tmp_path, pair):
    from harness.inprocess import InProcessEngines

    clean, adapter = pair
    second = save_random_adapter(clean, tmp_path / "second", seed=2)
    entries = resolve_models({"clean": str(clean), "v1": str(adapter), "v2": str(second)})
    engines = InProcessEngines(entries, ServeConfig(), tmp_path)
    assert engines.siblings("clean") == [("v1", ("v1", 1, str(adapter))),
                                         ("v2", ("v2", 2, str(second)))]  # fmt: skip
    engines._started.add("clean")
    assert engines.siblings("v1") == [("v2", ("v2", 2, str(second)))]
    engines._started.add("v1")
    assert engines.siblings("v2") == []  # v1's run has begun: it asks for its own answers


def test_models_on_one_engine_answer_together_and_take_their_kept_answers(chat_tokenizer):
    from types import SimpleNamespace

    from lm_eval.api.instance import Instance

    from harness.inprocess import InProcessLM, KeptAnswers

    calls = []

    class Engine:  # answers "<lora name>:<first prompt id>", finishing at the stop
        def generate(self, prompts, params, use_tqdm, lora_request):
            loras = (
                lora_request if isinstance(lora_request, list) else [lora_request] * len(prompts)
            )
            calls.append([None if lora is None else lora.lora_name for lora in loras])
            return [
                SimpleNamespace(
                    outputs=[
                        SimpleNamespace(
                            text=f"{lora.lora_name if lora else 'base'}:{p['prompt_token_ids'][0]}",
                            finish_reason="stop",
                            token_ids=[1, 2],
                        )
                    ]
                )
                for p, lora in zip(prompts, loras, strict=True)
            ]

    kept = KeptAnswers()
    requests = [
        Instance("generate_until", {}, (f"q{i}", {"until": ["\n"]}), idx=0) for i in range(3)
    ]
    common = {"kept": kept, "batch_size": 2, "max_gen_toks": 8}
    first = InProcessLM(
        Engine(),
        chat_tokenizer,
        lora=("v0", 3, "/c"),
        name="v0",
        siblings=[("v1", ("v1", 1, "/a")), ("v2", ("v2", 2, "/b"))],
        **common,
    )
    answers = first.generate_until(requests)
    assert calls == [["v0"] * 2 + ["v1"] * 2 + ["v2"] * 2, ["v0", "v1", "v2"]]  # chunks of 2
    assert all(a.startswith("v0:") for a in answers)
    calls.clear()
    second = InProcessLM(
        Engine(),
        chat_tokenizer,
        lora=("v1", 1, "/a"),
        name="v1",
        siblings=[("v2", ("v2", 2, "/b"))],
        **common,
    )
    again = second.generate_until(requests)
    assert calls == []  # every answer was kept for it
    assert [a.removeprefix("v1:") for a in again] == [a.removeprefix("v0:") for a in answers]
    assert second.finish_log.get(requests[0].args) == {"finish_reason": "stop", "n_tokens": 2}
    # a request no sibling saw is generated for it (and its remaining siblings) as before
    new = [Instance("generate_until", {}, ("q9", {"until": ["\n"]}), idx=0)]
    assert second.generate_until(new)[0].startswith("v1:") and calls == [["v1", "v2"]]
