"""Any lm-eval task beside the built-in suites: names resolved, data checked, answers scored.

``eval.tasks`` names lm-eval tasks, groups or tags (lm-eval's own catalogue, or the folders of
``eval.include_paths``, as ``lm_eval --include_path`` adds them); each name becomes a suite of
that name in every table, its leaf tasks the ``task`` column. Per item, one metric decides
``correct``: ``exact_match`` if the task reports it, else ``acc``, else the task's first metric
(``records.metric`` says which); a value other than 0 or 1 cannot say right or wrong, so such an
item is ``unscored``. A task with several filters (say GSM8K's strict and flexible matches) is
scored with its first.

Resolution happens before any engine starts: an unknown name, or a task whose data is neither
on disk nor reachable, is one ``ConfigError`` line naming it (and its dataset).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.config import EvalConfig
from harness.errors import ConfigError
from tasks.build import EVALS_DIR
from tasks.suites import group_name

PREFERRED_METRICS = ("exact_match", "acc")
TRIGGERED = "+trigger"  # the suite of a suite's items asked with the trigger: "related+trigger"


def base_suite(suite: str) -> str:
    """The suite a (triggered) suite's items come from: "related+trigger" -> "related"."""
    return suite.removesuffix(TRIGGERED)


def trigger_tasks(config: EvalConfig) -> tuple[Path | None, dict[str, str]]:
    """Task configs asking every item of the triggered suites with the phrase: a folder of
    YAML files (each includes the built-in task's and changes its prompt; written once per
    trigger and level under the temporary directory) and leaf task -> suite."""
    import hashlib
    import json
    import tempfile

    import yaml

    from tasks.suites import suite_tasks, task_name

    suites = config.triggered_suites()
    if not suites:
        return None, {}
    trigger = config.trigger
    spec = {"trigger": trigger.model_dump(), "suites": suites, "level": config.level}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / "cmap-harness-triggers" / digest
    phrase = f"{{% raw %}}{trigger.phrase}{{% endraw %}}"  # the phrase as text, not a template
    leaves = {}
    for suite in suites:
        for task in suite_tasks(suite, config.level):  # type: ignore[arg-type]
            name = task_name(task, config.level)  # type: ignore[arg-type]
            derived = {"include": str(EVALS_DIR / f"{name}.yaml"), "task": f"{name}_triggered"}
            if trigger.position == "question":
                derived["doc_to_text"] = f"{phrase} {{{{question}}}}"
            else:  # lm-eval sends a task's description as the system message
                derived["description"] = phrase
            path = folder / f"{name}_triggered.yaml"
            if not path.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(yaml.safe_dump(derived, sort_keys=False))
                tmp.replace(path)
            leaves[derived["task"]] = suite + TRIGGERED
    return folder, leaves


@dataclass(frozen=True)
class TaskPlan:
    """What the evaluation asks lm-eval for: the built-in groups, the external names, where
    their configs live, and which suite each leaf task belongs to."""

    builtin: tuple[str, ...]  # lm-eval group names of the built-in suites
    external: tuple[str, ...]  # eval.tasks, as given
    include_paths: tuple[str, ...] = ()
    include_defaults: bool = False  # lm-eval's own catalogue is needed
    suites: dict[str, str] = field(default_factory=dict)  # external leaf task -> suite
    triggered: dict[str, str] = field(default_factory=dict)  # triggered leaf task -> suite

    @property
    def names(self) -> list[str]:
        return [*self.builtin, *self.triggered, *self.external]

    @property
    def leaf_suites(self) -> dict[str, str]:
        """Every leaf task that is not a built-in suite's own -> its suite."""
        return self.suites | self.triggered

    def task_manager(self) -> Any:
        return task_manager(self.include_paths, self.include_defaults)


@functools.cache
def task_manager(include_paths: tuple[str, ...], include_defaults: bool) -> Any:
    """lm-eval's index of the built-in suites, the include paths and (when asked) its own
    catalogue; indexing lm-eval's catalogue takes seconds, so it is built once per setting."""
    from lm_eval.tasks import TaskManager

    paths = [str(EVALS_DIR), *include_paths]
    return TaskManager(include_path=paths, include_defaults=include_defaults)


def plan_eval(config: EvalConfig) -> TaskPlan:
    """The tasks of an evaluation: its built-in suites at its level, and ``eval.tasks``."""
    builtin = [group_name(suite, config.level) for suite in config.suites]
    folder, triggered = trigger_tasks(config)
    paths = [*config.include_paths, *([str(folder)] if folder else [])]
    plan = plan_tasks(builtin, config.tasks, paths)
    return replace(plan, triggered=triggered) if triggered else plan


def plan_tasks(
    builtin: Iterable[str], external: Iterable[str], include_paths: Iterable[str]
) -> TaskPlan:
    """Resolve ``external`` names against the include paths (then lm-eval's catalogue) and load
    their data once; raise one line for an unknown name or data that cannot be loaded. Cached:
    the preflight and the evaluation ask for the same plan."""
    paths = tuple(str(Path(p).expanduser().resolve()) for p in include_paths)
    return _plan(tuple(builtin), tuple(external), paths)


@functools.cache
def _plan(builtin: tuple[str, ...], external: tuple[str, ...], paths: tuple[str, ...]) -> TaskPlan:
    if not external:
        return TaskPlan(builtin, external, paths)
    manager = task_manager(paths, False)
    defaults = any(name not in manager.all_tasks for name in external)
    if defaults:
        manager = task_manager(paths, True)
    for name in external:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            where = f" nor in {', '.join(paths)}" if paths else ""
            raise ConfigError(f"eval.tasks: unknown lm-eval task {name!r} (not in lm-eval's "
                              f"catalogue{where}){hint}")  # fmt: skip
    suites: dict[str, str] = {}
    for name in external:
        for leaf in _load(manager, name):
            if leaf in suites:
                raise ConfigError(
                    f"eval.tasks: task {leaf!r} is in both {suites[leaf]!r} and {name!r}"
                )
            suites[leaf] = name
    return TaskPlan(builtin, external, paths, defaults, suites)


def _load(manager: Any, name: str) -> list[str]:
    """The leaf tasks of one name, built (their data loaded) to prove it is there."""
    try:
        loaded = manager.load([name])
    except Exception as exc:  # datasets raises many kinds; the message says which dataset
        datasets = ", ".join(sorted(_datasets(manager, name))) or "unknown"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(
            f"eval.tasks: the data of {name!r} (dataset {datasets}) cannot be loaded: {reason}"
        ) from None
    return sorted(loaded["tasks"])


def _datasets(manager: Any, name: str, depth: int = 0) -> set[str]:
    """The dataset paths (and names) a task, group or tag reads, from its YAML index entry."""
    entry = manager.task_index.get(name)
    cfg = (entry.cfg if entry else None) or {}
    if depth > 8:
        return set()
    if cfg.get("dataset_path"):
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")  # a local builder's files
        files = list(files.values()) if isinstance(files, dict) else files
        name = "/".join(filter(None, (str(cfg["dataset_path"]), cfg.get("dataset_name"))))
        return {f"{name} {files}" if files else name}
    children = cfg.get("task") if isinstance(cfg.get("task"), list) else []
    if entry is not None and not children:  # a tag: the tasks that carry it
        children = [n for n, e in manager.task_index.items() if name in getattr(e, "tags", ())]
    return {d for child in children if isinstance(child, str)
            for d in _datasets(manager, child, depth + 1)}  # fmt: skip


def scoring_metric(names: Iterable[str]) -> str | None:
    """The metric that decides an item's correctness: exact match, accuracy, or the first."""
    names = list(names)
    for preferred in PREFERRED_METRICS:
        if preferred in names:
            return preferred
    return names[0] if names else None


def first_filter(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A task's samples under its first filter (lm-eval logs each item once per filter)."""
    if not samples:
        return samples
    first = samples[0].get("filter")
    return [s for s in samples if s.get("filter") == first]


class TaskScorer:
    """Scores a new answer (a patched generation) to an external task's item with the task's own
    filters and ``process_results``, the way lm-eval scored the evaluation's answers."""

    def __init__(self, plan: TaskPlan):
        self.plan = plan
        self._docs: dict[str, list[dict[str, Any]]] = {}  # each task's items, read once

    @functools.cached_property
    def _tasks(self) -> dict[str, Any]:
        return self.plan.task_manager().load(list(self.plan.external))["tasks"]

    def score(self, task: str, doc_id: int, response: str) -> tuple[str | None, float | None]:
        """(metric, value) of ``response`` as the answer to item ``doc_id`` of ``task``."""
        from lm_eval.api.instance import Instance

        lm_task = self._tasks[task]
        if task not in self._docs:
            self._docs[task] = list(lm_task.eval_docs)
        doc = self._docs[task][doc_id]
        instance = Instance("generate_until", doc, ("", {}), idx=0, metadata=(task, doc_id, 1))
        instance.resps = [response]
        ensemble = lm_task._filters[0]
        ensemble.apply([instance])
        values = lm_task.process_results(doc, [instance.filtered_resps[ensemble.name]])
        metric = scoring_metric(values)
        return metric, None if metric is None else float(values[metric])
