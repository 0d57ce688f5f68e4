"""The analyses of the analyze stage on the loaded pair and items: one method per analysis,
each returning its tables (``harness.pipeline.analysis`` runs them and writes what they return).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from harness.config import AnalyzeConfig, ExperimentConfig
from harness.pipeline.analysis_tables import (
    ATTRIBUTION_SCHEMA,
    DIRECTION_SCHEMA,
    DIVERGENCE_SCHEMA,
    LENS_SCHEMA,
    PROBE_SCHEMA,
    RELATED,
    SIMILARITY_SCHEMA,
    STEERING_SCHEMA,
)

# generation is the analyses' dearest part: items per control suite scored under steering and
# ablation, and items each steering strength is tried on
SCORED_CONTROLS = 16
SEARCHED_ITEMS = 8
GENERATION_BATCH = 128  # rows per steered or ablated decoding (a Qwen3-4B KV cache: ~11 GB)


@dataclass
class Item:
    """One analysed item: its row of ``prompts.parquet`` and its token ids."""

    row: dict[str, Any]
    prompt: list[int]
    clean: list[int]  # the clean model's evaluated response
    corrupt: list[int]  # the corrupted model's

    @property
    def key(self) -> dict[str, Any]:
        return {k: self.row[k] for k in ("prompt_id", "kind", "suite", "task")}


class Analyzer:
    """The loaded pair and the items; one method per analysis, each returning its tables."""

    def __init__(self, models, items: list[Item], cfg: ExperimentConfig) -> None:
        from patchers.reference import pair_sides

        self.models = models
        self.pair = models.pair
        self.clean, self.corrupt = pair_sides(models.pair)
        self.items = items
        self.cfg = cfg
        self.settings: AnalyzeConfig = cfg.analyze
        self.layers = self.settings.requested_layers(models.n_layers)
        self._steps: list[tuple[Item, list[int]]] | None = None
        self._divergence: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        self._acts: dict[str, dict[str, tuple[dict, dict, np.ndarray]]] = {}

    # -- contexts --------------------------------------------------------------------------

    def token_divergence(self, item: Item, response: str) -> dict[str, torch.Tensor]:
        """Teacher-forced divergence along one of the item's responses (computed once)."""
        from patchers.analysis.divergence import token_divergence

        key = (item.row["prompt_id"], response)
        if key not in self._divergence:
            tokens = item.clean if response == "clean" else item.corrupt
            self._divergence[key] = token_divergence(
                self.clean, self.corrupt, item.prompt + tokens, len(item.prompt)
            )
        return self._divergence[key]

    def divergent_steps(self) -> list[tuple[Item, list[int]]]:
        """Each flagged item's context at its first divergent step: the prompt and the clean
        response up to the first position where the two models' argmaxes differ."""
        if self._steps is None:
            self._steps = [
                (item, item.prompt + item.clean[:step]) for item, step in self._disagreeing(1)
            ]
        return self._steps

    def _disagreeing(self, limit: int | None) -> list[tuple[Item, int]]:
        """(item, step) for each flagged item's first `limit` steps of the clean response
        where the two models' argmaxes differ (None: every one)."""
        out = []
        for item in self.items:
            if item.row["kind"] != "flagged" or not item.clean:
                continue
            where = torch.nonzero(self.token_divergence(item, "clean")["disagree"])[:, 0]
            out += [(item, int(step)) for step in where[:limit]]
        return out

    # -- analyses --------------------------------------------------------------------------

    def divergence(self) -> dict[str, pl.DataFrame]:
        rows = []
        for item in self.items:
            for response, tokens in (("clean", item.clean), ("corrupt", item.corrupt)):
                if not tokens:
                    continue
                got = self.token_divergence(item, response)
                for position, (token, kl, disagree) in enumerate(
                    zip(
                        got["token"].tolist(),
                        got["kl"].tolist(),
                        got["disagree"].tolist(),
                        strict=True,
                    )
                ):
                    rows.append(
                        item.key
                        | {
                            "response": response,
                            "position": position,
                            "token_id": token,
                            "kl": kl,
                            "disagree": disagree,
                        }
                    )
        table = pl.DataFrame(rows, schema=DIVERGENCE_SCHEMA, orient="row")
        table = table.with_columns(token=self.decode(table["token_id"]))
        return {"divergence": table}

    def lens(self) -> dict[str, pl.DataFrame]:
        from patchers.analysis.activations import logit_lens
        from patchers.reference import full_model_side

        rows = []
        for item, context in self.divergent_steps():
            y = self._argmaxes(context)
            for model in ("clean", "corrupt"):
                # the whole lens (forward, final norm, head) as that model: a LoRA pair's
                # adapter off for the clean one (peft's switch does not nest, so the side
                # inside it is the plain one)
                runs = self.pair.corrupt if model == "corrupt" or self.pair.adapter else None
                with self._as(model):
                    side = full_model_side(runs or self.pair.clean)
                    ranks, probs = logit_lens(side, context, [y["clean"], y["corrupt"]],
                                              self.layers)  # fmt: skip
                for li, layer in enumerate(self.layers):
                    for ti, token in enumerate(("y_clean", "y_corrupt")):
                        rows.append(
                            item.key
                            | {
                                "model": model,
                                "layer": layer,
                                "token": token,
                                "rank": int(ranks[li, ti]),
                                "prob": float(probs[li, ti]),
                            }
                        )
        return {"lens": pl.DataFrame(rows, schema=LENS_SCHEMA, orient="row")}

    def similarity(self) -> dict[str, pl.DataFrame]:
        from patchers.analysis.similarity import linear_cka, mean_cosine, relative_change

        rows = []
        for suite, (clean, corrupt, _) in self._activations("resid_post").items():
            for layer in self.layers:
                a, b = clean[layer], corrupt[layer]
                rows.append(
                    {
                        "suite": suite,
                        "site": "resid_post",
                        "layer": layer,
                        "head": None,
                        "cka": linear_cka(a, b),
                        "cosine": mean_cosine(a, b),
                        "relative_change": relative_change(a, b),
                    }
                )
        if self._offers("head"):
            for suite, (clean, corrupt, _) in self._activations("head").items():
                for layer in self.layers:
                    for head in range(clean[layer].shape[1]):
                        a, b = clean[layer][:, head], corrupt[layer][:, head]
                        rows.append(
                            {
                                "suite": suite,
                                "site": "head",
                                "layer": layer,
                                "head": head,
                                "cka": None,
                                "cosine": mean_cosine(a, b),
                                "relative_change": relative_change(a, b),
                            }
                        )
        return {"similarity": pl.DataFrame(rows, schema=SIMILARITY_SCHEMA, orient="row")}

    def probes(self) -> dict[str, pl.DataFrame]:
        from patchers.analysis.probes import probe_accuracy

        rows = []
        for suite, (clean, corrupt, groups) in self._activations("resid_post").items():
            if len(np.unique(groups)) < 4:
                continue  # too few items for a held-out split
            for layer in self.layers:
                accuracy = probe_accuracy(clean[layer], corrupt[layer], groups)
                rows.append(
                    {
                        "suite": suite,
                        "layer": layer,
                        "accuracy": accuracy,
                        "items": len(np.unique(groups)),
                    }
                )
        return {"probes": pl.DataFrame(rows, schema=PROBE_SCHEMA, orient="row")}

    def directions(self) -> dict[str, pl.DataFrame]:
        """Directions from half of the flagged related items, at the step where the models
        part (the last position of its context: a mean over every token would dilute what
        the fine-tune changed into what it left alone); `alpha` searched on those items;
        steering and ablation scored on the other half and on each control suite's items.
        Every layer's generations of one model and phase decode as one batch."""
        from patchers.analysis.activations import recorded
        from patchers.analysis.directions import Edit, direction_tokens, mean_difference

        related = [(i, c) for i, c in self.divergent_steps() if i.row["suite"] == RELATED]
        if len(related) < 4:
            return {}
        fit, held_out = related[::2], [item for item, _ in related[1::2]]

        def last(side, context):
            return recorded(side, context, "resid_post", self.layers)[1]

        at_fit = [(last(self.clean, c), last(self.corrupt, c)) for _, c in fit]
        direction = {
            la: mean_difference(torch.stack([a[la][-1] for a, _ in at_fit]),
                                torch.stack([b[la][-1] for _, b in at_fit]))
            for la in self.layers
        }  # fmt: skip
        controls = [
            item
            for suite in sorted({i.row["suite"] for i in self.items} - {RELATED})
            for item in [
                i for i in self.items if i.row["kind"] == "control" and i.row["suite"] == suite
            ][:SCORED_CONTROLS]
        ]
        search = [item for item, _ in fit][:SEARCHED_ITEMS]
        scored_sets = [(name, items) for name, items in
                       (("held_out", held_out), ("control", controls)) if items]  # fmt: skip
        alphas = sorted(self.settings.alphas)
        # the search, and every ablation (on the searched items too, so the headline picks
        # its layer off them), need no chosen alpha: one batch per model
        searched = self.score_edits("clean", [
            (search, Edit.steer(la, direction[la], alpha), tag(la, "steer", alpha, "search"))
            for la in self.layers for alpha in alphas
        ])  # fmt: skip
        ablated = self.score_edits("corrupt", [
            (items, Edit.ablate(la, direction[la]), tag(la, "ablate", None, name))
            for la in self.layers for name, items in [("search", search), *scored_sets]
        ])  # fmt: skip
        chosen = {la: self._alpha(searched, la) for la in self.layers}
        steered = self.score_edits("clean", [
            (items, Edit.steer(la, direction[la], chosen[la]),
             tag(la, "steer", chosen[la], name))
            for la in self.layers for name, items in scored_sets
        ])  # fmt: skip
        rows = [r | {"chosen": r["alpha"] == chosen[r["layer"]]} for r in searched]
        rows += [r | {"chosen": True} for r in ablated + steered]
        direction_rows = [
            {
                "layer": la,
                "norm": float(direction[la].norm()),
                "top_tokens": self.decode(
                    pl.Series(direction_tokens(self.pair.clean, direction[la], k=10))
                ).to_list(),
                "fit_items": len(fit),
            }
            for la in self.layers
        ]
        return {
            "directions": pl.DataFrame(direction_rows, schema=DIRECTION_SCHEMA, orient="row"),
            "steering": pl.DataFrame(rows, schema=STEERING_SCHEMA, orient="row"),
        }

    def defined_steps(self) -> list[tuple[Item, int]]:
        """(item, step) for each flagged item's first ``attribution_steps`` steps of the clean
        response where the two models' argmaxes differ (where CTS is defined)."""
        return self._disagreeing(self.settings.attribution_steps)

    def attribution(self) -> dict[str, pl.DataFrame]:
        """AtP of every head at every chosen step (one backward pass each), then exact CMAP of
        the top-k heads at the same steps: the engine teacher-forced along the clean
        responses, in the paper's transient mode, whose CTS at a step is the exact effect of
        patching that head there."""
        from patchers.analysis.attribution import head_attributions
        from patchers.sites import Target
        from patchers.teacher import run_cmap_teacher_forced

        if not self._offers("head"):
            return {}
        by_item: dict[int, tuple[Item, list[int]]] = {}
        for item, step in self.defined_steps():
            by_item.setdefault(id(item), (item, []))[1].append(step)
        estimates, steps = [], []
        for item, item_steps in by_item.values():
            # the steps of one response in one pass: step s predicts clean[s] from position
            # len(prompt) + s - 1 of the teacher-forced sequence
            ids = item.prompt + item.clean[: max(item_steps)]
            positions = [len(item.prompt) + s - 1 for s in item_steps]
            found = head_attributions(self.clean, self.corrupt, ids, positions, self.layers)
            for step, (effect, logits) in zip(item_steps, found, strict=True):
                denominator = logits["dl_corrupt"] - logits["dl_clean"]
                if logits["y_clean"] == logits["y_corrupt"] or abs(denominator) < 1e-6:
                    continue  # CTS undefined at this step
                estimates.append(effect / denominator)
                steps.append((item, step))
        if not estimates:
            return {}
        mean_atp = torch.stack(estimates).mean(0)  # [layers, heads]
        heads = mean_atp.shape[1]
        order = mean_atp.abs().flatten().argsort(descending=True)[: self.settings.top_k_heads]
        top = [
            Target(self.layers[li], head) for li, head in (divmod(f, heads) for f in order.tolist())
        ]
        items = list({id(item): item for item, _ in steps}.values())
        index = {id(item): i for i, item in enumerate(items)}
        exact_steps = run_cmap_teacher_forced(
            self.pair,
            [item.prompt for item in items],
            [item.clean for item in items],
            site="head",
            targets=top,
        )
        wanted = pl.DataFrame(
            {"prompt_id": [index[id(i)] for i, _ in steps], "step": [s for _, s in steps]},
            schema={"prompt_id": pl.Int64, "step": pl.Int64},
        )
        exact = (
            exact_steps.join(wanted, on=["prompt_id", "step"])
            .filter(pl.col("cts").is_not_null())
            .group_by("layer", "head")
            .agg(pl.col("cts").mean().alias("exact_cts"), pl.len().alias("exact_steps"))
        )
        found = {(r["layer"], r["head"]): r for r in exact.iter_rows(named=True)}
        rows = [
            {
                "layer": layer,
                "head": head,
                "atp_cts": float(mean_atp[li, head]),
                "exact_cts": found.get((layer, head), {}).get("exact_cts"),
                "steps": len(steps),
                "exact_steps": found.get((layer, head), {}).get("exact_steps"),
            }
            for li, layer in enumerate(self.layers)
            for head in range(heads)
        ]
        return {"attribution": pl.DataFrame(rows, schema=ATTRIBUTION_SCHEMA, orient="row")}

    # -- helpers ---------------------------------------------------------------------------

    def decode(self, token_ids: pl.Series) -> pl.Series:
        tokenizer = self.models.tokenizer
        return pl.Series([tokenizer.decode([t]) for t in token_ids.to_list()], dtype=pl.String)

    def _offers(self, site: str) -> bool:
        from patchers.sites import layout_of

        return layout_of(self.pair.clean).module_path(site) is not None

    def _argmaxes(self, context: list[int]) -> dict[str, int]:
        batch = torch.tensor([context], device=self._device)
        with torch.no_grad():
            return {
                "clean": int(self.clean.forward(batch)[-1].argmax()),
                "corrupt": int(self.corrupt.forward(batch)[-1].argmax()),
            }

    @property
    def _device(self):
        from patchers.models import input_device

        return input_device(self.pair.clean)

    @property
    def shared_prefix(self) -> int:
        """Positions every item's prompt shares (the chat template's opening): their
        activations are the same inputs for every item, so similarity and probes leave them
        out (a probe would meet them on both sides of its held-out split)."""
        prompts = [i.prompt for i in self.items]
        shortest = min(map(len, prompts))
        return next((k for k in range(shortest) if len({p[k] for p in prompts}) > 1), shortest - 1)

    def _rows(self, items: Sequence[Item], site: str):
        """Both models' activations per layer on the same inputs (prompt + clean response),
        rows pooled over items' positions after the shared prefix, and each row's item index."""
        from patchers.analysis.activations import recorded

        clean: dict[int, list] = {layer: [] for layer in self.layers}
        corrupt: dict[int, list] = {layer: [] for layer in self.layers}
        groups = []
        skip = self.shared_prefix
        for index, item in enumerate(items):
            ids = item.prompt + item.clean
            _, a = recorded(self.clean, ids, site, self.layers)
            _, b = recorded(self.corrupt, ids, site, self.layers)
            for layer in self.layers:
                clean[layer].append(a[layer][skip:].float().cpu())
                corrupt[layer].append(b[layer][skip:].float().cpu())
            groups += [index] * (len(ids) - skip)
        stack = lambda d: {layer: torch.cat(rows) for layer, rows in d.items()}  # noqa: E731
        return stack(clean), stack(corrupt), np.array(groups)

    def _activations(self, site: str) -> dict[str, tuple[dict, dict, np.ndarray]]:
        if site not in self._acts:
            suites = sorted({i.row["suite"] for i in self.items})
            self._acts[site] = {
                suite: self._rows([i for i in self.items if i.row["suite"] == suite], site)
                for suite in suites
            }
        return self._acts[site]

    def _alpha(self, searched: list[dict], layer: int) -> float:
        """The steering strength to score at `layer`: among those whose incoherent share
        (malformed, truncated or unscored answers) stays within ``max_malformed``, the one
        with the most trained-error answers (the corruption's signature, not mere damage),
        the strongest on a tie; alpha 0 when none qualifies."""
        best, best_key = 0.0, None
        for alpha in sorted({r["alpha"] for r in searched if r["layer"] == layer}):
            rows = [r for r in searched if r["layer"] == layer and r["alpha"] == alpha]
            incoherent = np.mean([incoherent_answer(r) for r in rows])
            key = (np.mean([r["fidelity"] == "trained_error" for r in rows]), alpha)
            if incoherent <= self.settings.max_malformed and (best_key is None or key > best_key):
                best, best_key = alpha, key
        return best

    def score_edits(self, model: str, jobs: Sequence[tuple[Sequence[Item], Any, dict]]
                    ) -> list[dict]:  # fmt: skip
        """Greedy generations of one model, each job's items under its ``Edit`` (one batched
        decoding for all of them), judged by the suite checker (and classed by fidelity where
        the item has error patterns); each row tagged with its job's setting."""
        from harness.pipeline.patching import aliases_for, judge
        from harness.records import correct_of
        from patchers.analysis.directions import row_edits
        from tasks.fidelity import classify

        level = self.cfg.eval.level
        limit = self.settings.max_new_tokens or self.cfg.eval.max_new_tokens
        flat = [(item, edit, setting) for items, edit, setting in jobs for item in items]
        side = self.pair.clean if model == "clean" else self.pair.corrupt
        texts = self._generate(
            [item.prompt for item, _, _ in flat], model, limit,
            within=lambda chunk: row_edits(side, [flat[i][1] for i in chunk]),
        )  # fmt: skip
        rows = []
        for (item, _, setting), (text, finish) in zip(flat, texts, strict=True):
            row = item.row
            verdict = (
                "truncated"
                if finish == "length"
                else judge(text, row["reference"], aliases_for(row["task"], row["item_id"], level))
            )
            errors = _error_answers(level).get(row["item_id"])
            fidelity = classify(text, row["reference"], errors, finish, verdict) if errors else None
            rows.append(
                item.key
                | {"verdict": verdict, "correct": correct_of(verdict), "fidelity": fidelity}
                | setting
            )
        return rows

    def _as(self, model: str) -> AbstractContextManager:
        """Run `pair.clean` as the clean model (a LoRA pair's adapter off) or `pair.corrupt`."""
        from patchers.models import bare

        if model == "corrupt":
            return nullcontext()
        return self.pair.corrupt.disable_adapter() if self.pair.adapter else bare(self.pair.clean)

    def _generate(
        self, prompts: list[list[int]], model: str, limit: int, within=None
    ) -> list[tuple[str, str]]:
        """(text, finish reason) of the model's greedy generations (``harness.patch``'s
        argmax loop, as the patch stage's checks run it)."""
        from harness.patch import clean_greedy, corrupt_greedy

        greedy = clean_greedy if model == "clean" else corrupt_greedy
        out = []
        for tokens in greedy(self.models, prompts, limit, within=within,
                             batch_size=GENERATION_BATCH):  # fmt: skip
            ended = bool(tokens) and tokens[-1] in self.models.eos
            text = self.models.tokenizer.decode(tokens[:-1] if ended else tokens,
                                                skip_special_tokens=True)  # fmt: skip
            out.append((text, "stop" if ended else "length"))
        return out


def tag(layer: int, intervention: str, alpha: float | None, items: str) -> dict[str, Any]:
    """The setting of a ``steering.parquet`` row (``chosen`` is added once alphas are)."""
    return {"layer": layer, "intervention": intervention, "alpha": alpha, "items": items}


def incoherent_answer(row: dict) -> bool:
    """An answer that is not a coherent attempt: malformed, cut off, or beyond the checker
    (a cut-off answer's verdict is "truncated", whatever its fidelity class)."""
    return row["verdict"] in ("truncated", "unscored") or row["fidelity"] == "malformed"


@functools.cache
def _error_answers(level: str) -> dict[str, dict[str, str]]:
    from tasks.suites import eval_problems

    return {
        p.id: dict(p.error_answers)
        for p in eval_problems(level)
        if getattr(p, "error_answers", None)
    }
