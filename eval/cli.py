"""``fedrag eval run`` and ``fedrag eval report``: the evaluation harness from the command line."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from eval.runner import Progress as RunProgress
from federation.progress import LineProgress, progress

console = Console(stderr=True)
app = typer.Typer(
    help="Evaluate the federation on medical and code QA: every configuration side by side.", no_args_is_help=True
)


class _Bars(RunProgress):
    """Draws one bar per step of the run."""

    def __init__(self, progress: Progress | LineProgress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, description: str, total: int) -> None:
        if self._task is not None:  # a step that skipped units (reused work) shows as complete
            self._progress.update(self._task, completed=self._progress.tasks[self._task].total)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, units: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, units)

    def note(self, message: str) -> None:
        self._progress.console.print(message, highlight=False)


@app.command("run")
def run(
    suite: Annotated[str, typer.Option(help="Suite(s): medical, code, or all (ignored with --corpus).")] = "all",
    corpus: Annotated[
        Path | None,
        typer.Option(
            help="Your own corpus instead of the packaged suites: a directory with one folder per silo (read as "
            "'fedrag silo ingest' reads a folder), or a JSONL file of {id, title, text, metadata, silo} records. "
            "Every document is ingested. Needs --questions.",
        ),
    ] = None,
    questions: Annotated[
        Path | None,
        typer.Option(
            help="Your own questions (with --corpus): JSONL of {id, question, gold} records, gold the id or ids of "
            "the corpus documents that answer it.",
        ),
    ] = None,
    encoder_backend: Annotated[
        str,
        typer.Option(
            help="What runs the embedding model for every silo and question: torch, openvino or openvino-bf16 "
            "(see 'fedrag federation init --help'); compare backends by running each into its own --out."
        ),
    ] = "torch",
    silo_field: Annotated[
        str, typer.Option(help="The field (top level or in metadata) naming each JSONL corpus record's silo.")
    ] = "silo",
    configs: Annotated[
        str, typer.Option(help="Configurations (comma list, globs allowed, or 'all'); see 'fedrag eval configs'.")
    ] = "all",
    llm_configs: Annotated[
        str,
        typer.Option(
            help="Configurations that also answer multiple-choice and code questions with the LLM "
            "(and free-form questions, unless --answer-configs says otherwise)."
        ),
    ] = "no-rag,central,fed-all,fed-routed-learned",
    limit: Annotated[int, typer.Option(help="Retrieval questions per suite.")] = 100,
    mc_limit: Annotated[int, typer.Option(help="Multiple-choice questions per suite (answered by the LLM).")] = 20,
    code_limit: Annotated[int, typer.Option(help="HumanEval problems (code suite; answered by the LLM).")] = 5,
    docs_per_corpus: Annotated[
        int, typer.Option(help="Documents ingested per corpus (gold documents included).")
    ] = 400,
    silos: Annotated[int, typer.Option(help="Silos of the topical and IID partitions.")] = 6,
    llm_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible LLM server (vllm serve); default: start the embedded one.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model name to request from the LLM server.")] = "smollm2-135m-instruct",
    context_tokens: Annotated[int, typer.Option(help="The model's context window in tokens.")] = 2048,
    mc_max_tokens: Annotated[int, typer.Option(help="Most tokens generated per multiple-choice answer.")] = 96,
    code_max_tokens: Annotated[int, typer.Option(help="Most tokens generated per HumanEval answer.")] = 320,
    answer_configs: Annotated[
        str | None,
        typer.Option(
            help="Configurations that answer retrieval and unanswerable questions free-form "
            "(default: those of --llm-configs that retrieve)."
        ),
    ] = None,
    answer_formats: Annotated[
        str, typer.Option(help="Free-form answer formats to compare: structured (the default), free (the old one).")
    ] = "structured,free",
    answer_limit: Annotated[
        int, typer.Option(help="Retrieval questions per suite answered free-form (a seeded sample; 0: none).")
    ] = 20,
    abstain_limit: Annotated[
        int,
        typer.Option(help="Unanswerable questions per suite (gold document left out of the federation) answered."),
    ] = 10,
    calibration_limit: Annotated[
        int, typer.Option(help="Further unanswerable questions per suite that calibrate the abstention threshold.")
    ] = 40,
    answer_max_tokens: Annotated[int, typer.Option(help="Most tokens generated per free-form answer.")] = 384,
    serve: Annotated[str, typer.Option(help="Silos in process (inprocess, fast) or as processes (process).")] = (
        "inprocess"
    ),
    source_order: Annotated[
        str,
        typer.Option(
            help="Order of the sources in answer prompts: retrieval (their merged rank, as the gateway sends them) "
            "or shuffled (a seeded permutation per prompt: a position-bias probe of whether the model cites the "
            "source that answers rather than the first)."
        ),
    ] = "retrieval",
    out: Annotated[Path, typer.Option(help="Output directory (a crashed run resumes from it).")] = Path("eval-out"),
    restart: Annotated[bool, typer.Option(help="Discard what OUT holds and start again.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of every sample and partition.")] = 0,
    lora: Annotated[
        list[str] | None,
        typer.Option(
            "--lora",
            help="NAME=FILE: serve a llama.cpp LoRA adapter (GGUF, from 'fedrag train export') beside the base model "
            "and answer every question with it (model fedrag:NAME; repeat for more: the first answers). Its file "
            "hash is part of the run's identity. With --llm-url the server must serve the same files in this order.",
        ),
    ] = None,
) -> None:
    """Run (or resume) an evaluation; writes OUT/report.md, OUT/results.json, OUT/questions.jsonl and plots."""
    from eval.adapters import adapter_identity, parse_lora
    from eval.answering import parse_formats
    from eval.configs import select_configs
    from eval.evaluation import run_evaluation
    from eval.runner import RunOptions
    from federation.encoder import ENCODER_BACKENDS
    from federation.errors import ConfigError

    if encoder_backend not in ENCODER_BACKENDS:
        raise ConfigError(f"--encoder-backend must be one of {', '.join(ENCODER_BACKENDS)}, not '{encoder_backend}'")
    if (corpus is None) != (questions is None):
        raise ConfigError("--corpus and --questions go together: your documents, and questions about them")
    if corpus is not None and questions is not None:
        from eval.own_suite import load_own_suite

        load_own_suite(corpus, questions, silo_field=silo_field, retrieval_limit=limit, seed=seed)  # fail before OUT
    if serve not in ("inprocess", "process"):
        raise ConfigError(f"--serve must be inprocess or process, not '{serve}'")
    if source_order not in ("retrieval", "shuffled"):
        raise ConfigError(f"--source-order must be retrieval or shuffled, not '{source_order}'")
    try:
        selected = select_configs(configs)
        llm_selected = select_configs(llm_configs) if llm_configs.strip() else []
        if answer_configs is None:
            free_form = [c for c in llm_selected if c.retrieves]
        else:
            free_form = [c for c in select_configs(answer_configs) if c.retrieves] if answer_configs.strip() else []
        formats = parse_formats(answer_formats)
        adapters = tuple(parse_lora(spec) for spec in lora or [])
        adapter_identity(adapters)  # refuses a name given twice
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    limits = (
        ("--limit", limit),
        ("--mc-limit", mc_limit),
        ("--code-limit", code_limit),
        ("--answer-limit", answer_limit),
        ("--abstain-limit", abstain_limit),
        ("--calibration-limit", calibration_limit),
    )
    for name, value in limits:
        if value < 0:
            raise ConfigError(f"{name} must be 0 or more, not {value}")
    if min(docs_per_corpus, silos, mc_max_tokens, code_max_tokens, answer_max_tokens) < 1:
        raise ConfigError(
            "--docs-per-corpus, --silos, --mc-max-tokens, --code-max-tokens and --answer-max-tokens must be at least 1"
        )
    if restart and out.exists():
        shutil.rmtree(out)
    options = RunOptions(
        out=out,
        configs=tuple(selected),
        llm_configs=frozenset(c.name for c in llm_selected),
        llm_url=llm_url,
        llm_model=model,
        retrieval_limit=limit,
        mc_limit=mc_limit,
        code_limit=code_limit,
        docs_per_corpus=docs_per_corpus,
        silos=silos,
        context_tokens=context_tokens,
        mc_max_tokens=mc_max_tokens,
        code_max_tokens=code_max_tokens,
        answer_configs=frozenset(c.name for c in free_form),
        answer_formats=formats,
        answer_limit=answer_limit,
        abstain_limit=abstain_limit,
        calibration_limit=calibration_limit,
        answer_max_tokens=answer_max_tokens,
        serve_mode=serve,  # type: ignore[arg-type]
        seed=seed,
        lora_adapters=adapters,
        source_order=source_order,  # type: ignore[arg-type]
        corpus=corpus,
        questions=questions,
        silo_field=silo_field,
        encoder_backend=encoder_backend,
    )
    # Silos served for DP configurations keep no audit log (nothing here outlives the run), which
    # the release policy rightly warns about in production; the warning is noise in an evaluation.
    logging.getLogger("silo_node.policy.release").setLevel(logging.ERROR)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with progress(console, *columns) as bars:
        run_evaluation(options, suites=suite, progress=_Bars(bars))
    console.print(f"report: {out / 'report.md'}", highlight=False)
    typer.echo((out / "report.md").read_text(encoding="utf-8"))


@app.command("report")
def report(out: Annotated[Path, typer.Argument(help="A run's output directory.")] = Path("eval-out")) -> None:
    """Rewrite OUT/report.md, results.json and the plots from OUT/questions.jsonl."""
    from eval.evaluation import report as write
    from federation.errors import ConfigError

    if not (out / "run.json").is_file():
        raise ConfigError(f"{out} holds no evaluation run (no run.json)")
    write(out)
    typer.echo((out / "report.md").read_text(encoding="utf-8"))


@app.command("configs")
def configs() -> None:
    """List the configurations a run can compare."""
    from eval.configs import standard_configs

    for config in standard_configs():
        typer.echo(f"{config.name:28} {config.describe()}")
