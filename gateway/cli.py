"""``fedrag gateway …`` and ``fedrag ask``: run a gateway, manage its API keys, ask it questions."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from federation.config import GatewaySettings, RetrievalSettings
from federation.errors import ConfigError, FedragError, UpstreamError

console = Console()
app = typer.Typer(help="Run the gateway (routed federated retrieval + chain-of-thought answers).", no_args_is_help=True)
keys_app = typer.Typer(help="End-user API keys of a gateway (stored hashed).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def keys_add(
    file: Annotated[Path, typer.Argument(help="API key file (created if missing, mode 0600).")],
    name: Annotated[str, typer.Argument(help="Who the key is for (shown in logs and metrics, never the key).")],
) -> None:
    """Create an API key; it is printed once and only its SHA-256 is stored."""
    from gateway.apikeys import ApiKeyStore

    key = ApiKeyStore.add(file, name)
    console.print(f"API key '{name}' added to {file}; it is shown only now:", highlight=False)
    typer.echo(key)


def settings_with_flags(
    required: dict[str, Any], flags: dict[str, Any], config_file: Path | None = None
) -> GatewaySettings:
    """The gateway's settings: defaults < ``config_file`` (TOML) < ``FEDRAG_GATEWAY_*`` variables < flags given.

    ``flags`` maps top-level settings to values and sections (``llm``, ``retrieval``, ...) to
    dicts of their settings; a None value is a flag left out, which keeps what the layers below say.

    Raises:
        ConfigError: the file cannot be read, or a setting is unknown or invalid.
    """
    from pydantic_settings import EnvSettingsSource

    layers: list[dict[str, Any]] = []
    if config_file is not None:
        try:
            layers.append(tomllib.loads(config_file.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the gateway settings file {config_file}: {exc}") from exc
    layers += [EnvSettingsSource(GatewaySettings)(), _given(flags), required]
    merged: dict[str, Any] = {}
    for layer in layers:
        _deep_update(merged, layer)
    try:
        return GatewaySettings(**merged)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that were given (not None), sections included."""
    given: dict[str, Any] = {}
    for name, value in flags.items():
        if isinstance(value, dict):
            if section := {k: v for k, v in value.items() if v is not None}:
                given[name] = section
        elif value is not None:
            given[name] = value
    return given


def _deep_update(target: dict[str, Any], layer: dict[str, Any]) -> None:
    for name, value in layer.items():
        if isinstance(value, dict) and isinstance(target.get(name), dict):
            _deep_update(target[name], value)
        else:
            target[name] = value


@app.command("serve")
def serve(
    federation: Annotated[Path, typer.Option(help="The federation's membership file.")],
    key: Annotated[Path, typer.Option(help="The gateway's private.pem (listed under \\[\\[gateways]]).")],
    api_keys: Annotated[Path, typer.Option(help="End-user API key file ('fedrag gateway keys add').")],
    config: Annotated[
        Path | None,
        typer.Option(
            help="A TOML file of gateway settings (the GatewaySettings fields, sections as tables such as "
            "\\[retrieval]); FEDRAG_GATEWAY_* variables override it, and flags override both."
        ),
    ] = None,
    llm_url: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible LLM server (vllm serve, or fedrag llm serve); default http://127.0.0.1:8080."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name to request from the LLM server; default smollm2-135m-instruct.")
    ] = None,
    llm_api_key: Annotated[
        str | None, typer.Option(envvar="FEDRAG_LLM_API_KEY", help="Key for the LLM server.")
    ] = None,
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            "--adapter",
            help="A LoRA adapter the LLM server serves, asked for as model fedrag:NAME (repeat for more). "
            "llama.cpp: in the order of 'fedrag llm serve --lora'; vLLM: a name of --lora-modules.",
        ),
    ] = None,
    lora_adapter: Annotated[
        str | None, typer.Option(help="The default adapter, for requests that name no served model.")
    ] = None,
    context_tokens: Annotated[int | None, typer.Option(help="The model's context window in tokens (2048).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens generated per answer (384).")] = None,
    llm_parallel: Annotated[
        int | None,
        typer.Option(
            help="Requests the LLM server decodes at once (its slots; 1): the gateway generates at most this many "
            "answers together and queues or refuses (429) the rest."
        ),
    ] = None,
    llm_timeout: Annotated[float | None, typer.Option(help="Seconds to wait for a whole answer (60).")] = None,
    answer_format: Annotated[
        str | None,
        typer.Option(
            help="structured (default): the LLM server must follow a JSON schema (reasoning, answer, citations of the "
            "sources given); free: free text with <think> or reasoning_content (reasoning models with a reasoning "
            "parser)."
        ),
    ] = None,
    llm_server: Annotated[
        str | None,
        typer.Option(help="The LLM server's kind, for its anti-repetition fields: llama.cpp (default), vllm, openai."),
    ] = None,
    abstain_below: Annotated[
        float | None,
        typer.Option(
            help="Answer 'the sources do not contain the answer' without the LLM when the best passage scores "
            "below this (default: the gateway's calibrated setting; -1 never abstains)."
        ),
    ] = None,
    router: Annotated[str | None, typer.Option(help="Routing strategy: all, centroid (default) or learned.")] = None,
    router_model: Annotated[Path | None, typer.Option(help="Learned router file ('fedrag router train').")] = None,
    router_top_m: Annotated[
        int | None, typer.Option(help="Centroid router: most silos above the threshold (3).")
    ] = None,
    router_threshold: Annotated[
        float | None, typer.Option(help="Centroid router: centroid similarity a silo needs.")
    ] = None,
    router_coverage: Annotated[
        float | None, typer.Option(help="Learned share router: the predicted share the selected silos reach.")
    ] = None,
    max_silos: Annotated[
        int | None,
        typer.Option(help="Most silos asked per question (default: 4 for centroid and learned, every silo for all)."),
    ] = None,
    k: Annotated[int | None, typer.Option(help="Passages kept after merging (8).")] = None,
    k_per_silo: Annotated[int | None, typer.Option(help="Passages asked of each silo (5).")] = None,
    merger: Annotated[
        str | None, typer.Option(help="Merging of silo results: score (default), rrf or calibrated.")
    ] = None,
    deadline: Annotated[
        float | None, typer.Option(help="Seconds all silo searches of one question may take (3).")
    ] = None,
    hide_silo_names: Annotated[
        bool | None, typer.Option(help="Cite per-answer pseudonyms instead of silo names.", show_default=False)
    ] = None,
    allow_llm_only: Annotated[
        bool | None, typer.Option(help="Let requests ask for an answer without sources.", show_default=False)
    ] = None,
    rate_limit: Annotated[int | None, typer.Option(help="Requests per minute per API key (60).")] = None,
    state_url: Annotated[
        str | None,
        typer.Option(
            help="Redis URL (redis://HOST:PORT/DB, with a password redis://:PASSWORD@HOST:PORT/DB) holding "
            "the rate limits and the DP privacy ledger, shared by every gateway process given it (default: this "
            "process). A URL with a password is better given as FEDRAG_GATEWAY_STATE_URL, which other users cannot "
            "read in the process list."
        ),
    ] = None,
    reuse_port: Annotated[
        bool,
        typer.Option(
            help="Let several gateway processes listen on --port (SO_REUSEPORT; give them one --state-url).",
            show_default=False,
        ),
    ] = False,
    silo_ca: Annotated[Path | None, typer.Option(help="CA bundle to verify silos' TLS certificates.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the gateway: /v1/chat/completions, /v1/ask, /v1/retrieve, /v1/models, /v1/silos, the chat page at /.

    Every setting can also come from --config FILE (TOML) or a FEDRAG_GATEWAY_* variable
    (sections with a double underscore, e.g. FEDRAG_GATEWAY_RETRIEVAL__K=10): flags override
    variables, which override the file.
    """
    from federation.http import serve as serve_app
    from gateway.app import create_app

    flags: dict[str, Any] = {
        "allow_llm_only": allow_llm_only,
        "rate_limit_per_minute": rate_limit,
        "state_url": state_url,
        "llm": {
            "base_url": llm_url,
            "model": model,
            "api_key": llm_api_key,
            "lora_adapter": lora_adapter,
            "adapters": adapter,
            "context_tokens": context_tokens,
            "max_tokens": max_tokens,
            "parallel": llm_parallel,
            "timeout_s": llm_timeout,
            "answer_format": answer_format,
            "server": llm_server,
        },
        "grounding": {"abstain_below": abstain_below},
        "retrieval": {
            "router": router,
            "router_model": router_model,
            "router_top_m": router_top_m,
            "router_threshold": router_threshold,
            "router_coverage": router_coverage,
            "max_silos": max_silos,
            "k": k,
            "k_per_silo": k_per_silo,
            "merger": merger,
            "deadline_s": deadline,
            "show_silo_names": None if hide_silo_names is None else not hide_silo_names,
        },
    }
    try:
        settings = settings_with_flags(
            {"federation_file": federation, "key_file": key, "api_keys_file": api_keys}, flags, config
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    serve_app(
        create_app(settings, silo_verify=str(silo_ca) if silo_ca else True),
        host=host,
        port=port,
        reuse_port=reuse_port,
        log_level=log_level,
    )


def unlabelled_silos(examples: Sequence[Any], silos: Sequence[str]) -> list[str]:
    """The silos that no labelled question found relevant (in no question's all-silo top-k)."""
    seen = set().union(*(e.relevant for e in examples)) if examples else set()
    return [name for name in silos if name not in seen]


def _verdict(reply: dict[str, Any]) -> str:
    """One line on how far the answer can be trusted."""
    if reply.get("abstained"):
        return "[yellow]abstained: the best passage is too weak, the sources do not contain the answer[/]"
    parts = []
    grounded = reply.get("grounded")
    if grounded is True:
        parts.append("[green]grounded[/]: it cites sources that support its claims")
    elif grounded is False:
        parts.append("[yellow]not grounded[/]: it cites no source that supports most of its claims")
    if reply.get("finish_reason") == "repetition":
        parts.append("[yellow]stopped: the model started repeating itself[/]")
    elif reply.get("finish_reason") == "length":
        parts.append("[yellow]cut at the token limit[/]")
    return "; ".join(parts)


def _print_partial(reply: dict[str, Any], out: Console) -> None:
    if reply.get("partial"):
        reasons = reply["trace"].get("partial_reasons") or ["a silo did not answer"]
        out.print(f"[yellow]partial[/]: {escape('; '.join(reasons))}")


def print_passages(reply: dict[str, Any], out: Console = console) -> None:
    """Print a /v1/retrieve reply: the passages and the routing trace."""
    title = f"passages for: {escape(reply['question'])}"
    table = Table("[n]", "silo", "document", "score", "passage", title=title)
    for p in reply["passages"]:
        text = escape(p["text"][:160].replace("\n", " "))
        table.add_row(str(p["number"]), escape(p["silo"]), escape(p["doc_id"]), f"{p['score']:.3f}", text)
    out.print(table if reply["passages"] else "no passages could be retrieved")
    _print_partial(reply, out)
    print_trace(reply["trace"], out)


def print_answer(reply: dict[str, Any], out: Console = console) -> None:
    """Print an /v1/ask reply: reasoning, answer, checked claims, citations, routing trace."""
    if reply.get("reasoning"):
        out.print(Panel(reply["reasoning"].strip(), title="reasoning", border_style="dim"))
    out.print(Panel(reply["answer"].strip() or "(empty)", title="answer", border_style="green"))
    _print_partial(reply, out)
    if verdict := _verdict(reply):
        out.print(verdict)
    if reply.get("choice_parsed") is not None:
        out.print(
            f"chosen option: {reply.get('choice') if reply['choice_parsed'] else 'could not be read from the answer'}"
        )
    if reply.get("claims"):
        claims = Table("claim", "sources", "supported", title="claims checked against their sources")
        for c in reply["claims"]:
            cited = " ".join(f"[{n}]" + ("†" if c["added"] else "") for n in c["citations"]) or "-"
            claims.add_row(c["text"], cited, f"{'yes' if c['supported'] else 'NO'} ({c['support']:.2f})")
        out.print(claims)
        if any(c["added"] for c in reply["claims"]):
            out.print("† citation added by the gateway's grounding check, not by the model", style="dim")
    if reply["citations"]:
        table = Table("[n]", "cited", "silo", "document", "score", "passage", title="sources")
        for c in reply["citations"]:
            table.add_row(
                str(c["number"]),
                "yes" if c["cited"] else ("added†" if c.get("added") else ""),
                c["silo"],
                c["doc_id"],
                f"{c['score']:.3f}",
                c["text"][:120].replace("\n", " "),
            )
        out.print(table)
    print_trace(reply["trace"], out)


def print_trace(trace: dict[str, Any], out: Console = console) -> None:
    """Print the routing trace and timings of a reply."""
    if trace.get("question_from") in ("llm", "history"):
        note = f" ({trace['question_note']})" if trace.get("question_note") else ""
        searched = escape(trace["question"])
        out.print(f"searched for: {searched} [dim]from the conversation, by {trace['question_from']}{escape(note)}[/]")
    routing = Table(
        "silo", "routed", "score", "reason", "outcome", "ms", "passages", title=f"routing ({trace['router']})"
    )
    for s in trace["silos"]:
        score = "" if s["route_score"] is None else f"{s['route_score']:.2f}"
        outcome = s["outcome"] + (f": {s['detail']}" if s["detail"] else "")
        routing.add_row(
            s["silo"],
            "yes" if s["routed"] else "no",
            score,
            s["route_reason"],
            outcome,
            f"{s['latency_ms']:.0f}",
            str(s["passages"]),
        )
    out.print(routing)
    steps = ", ".join(f"{k} {v:.0f} ms" for k, v in trace["timings_ms"].items())
    out.print(f"timings: {steps}; bytes exchanged with silos: {trace['bytes_exchanged']}", highlight=False)


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    gateway: Annotated[str, typer.Option(help="Gateway base URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(envvar="FEDRAG_API_KEY", help="Your API key (or FEDRAG_API_KEY).")] = "",
    choice: Annotated[
        list[str] | None, typer.Option("--choice", help="An option (repeat for multiple choice).")
    ] = None,
    llm_only: Annotated[bool, typer.Option(help="Allow an answer without sources if no silo answers.")] = False,
    model: Annotated[
        str | None, typer.Option(help="The model to answer with, e.g. fedrag:NAME (see the gateway's /v1/models).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 300.0,
    retrieve_only: Annotated[
        bool, typer.Option(help="Only retrieve (POST /v1/retrieve): print the released passages, no LLM answer.")
    ] = False,
    k: Annotated[int | None, typer.Option(help="--retrieve-only: passages to return (the gateway's k).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON reply.")] = False,
) -> None:
    """Ask a gateway a question; print reasoning, answer, citations and the routing trace."""
    if not api_key:
        raise ConfigError("an API key is needed: --api-key KEY or FEDRAG_API_KEY")
    body: dict[str, Any] = {"question": question}
    if retrieve_only:
        if choice or model or llm_only:
            raise ConfigError("--retrieve-only asks no model: leave out --choice, --model and --llm-only")
        if k is not None:
            body["k"] = k
    else:
        body["allow_llm_only"] = llm_only
        if choice:
            body["choices"] = choice
        if model:
            body["model"] = model
    route = "/v1/retrieve" if retrieve_only else "/v1/ask"
    try:
        response = httpx.post(
            f"{gateway.rstrip('/')}{route}", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise FedragError(f"cannot reach the gateway at {gateway}: {type(exc).__name__}") from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text[:200]
        raise UpstreamError(f"gateway answered {response.status_code}: {detail}", upstream_status=response.status_code)
    reply = response.json()
    if as_json:
        typer.echo(json.dumps(reply, indent=2))
    elif retrieve_only:
        print_passages(reply)
    else:
        print_answer(reply)


def demo(
    workdir: Annotated[Path, typer.Argument(help="Working directory (reused by later runs).")] = Path("demo-work"),
    serve: Annotated[bool, typer.Option(help="Keep the federation running and print the chat page's URL.")] = False,
    per_corpus: Annotated[int, typer.Option(help="Documents ingested from each packaged corpus.")] = 300,
    lora: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="A federated LoRA adapter (adapter.gguf of 'fedrag train run', or 'fedrag train export "
            "--format gguf'): the embedded LLM serves it and the gateway answers with it.",
        ),
    ] = None,
) -> None:
    """Run a whole federation on this machine: five silos, the embedded LLM, the gateway; ask two questions."""
    from gateway.demo import run_demo

    run_demo(workdir, per_corpus=per_corpus, serve=serve, console=console, adapter=lora)


router_app = typer.Typer(help="Train and check the learned router.", no_args_is_help=True)


@router_app.command("train")
def router_train(
    questions: Annotated[
        Path | None,
        typer.Argument(help="Training questions, one per line (blank lines ignored); optional with --per-silo."),
    ] = None,
    *,
    federation: Annotated[Path, typer.Option(help="The federation's membership file.")],
    key: Annotated[Path, typer.Option(help="A gateway's private.pem (the silos are searched as this gateway).")],
    out: Annotated[Path, typer.Option(help="Where to write the model (JSON, no pickle).")] = Path("router.json"),
    k: Annotated[int, typer.Option(help="A silo is relevant when it has a passage in the all-silo top-k.")] = 10,
    model: Annotated[
        str, typer.Option(help="share: predict each silo's share of the all-silo top-k; relevance: P(contributes).")
    ] = "share",
    selection: Annotated[
        str | None,
        typer.Option(
            help="coverage: fewest silos whose predicted shares reach the coverage (share model only); "
            "threshold: every silo scoring at least the threshold. Default: coverage for the share model, "
            "threshold for the relevance model, or the rule of --coverage / --threshold."
        ),
    ] = None,
    recall: Annotated[
        float, typer.Option(help="Target recall@k vs asking all silos; the setting is calibrated to reach it.")
    ] = 0.95,
    coverage: Annotated[
        float | None, typer.Option(help="Use this coverage (0-1] instead of calibrating (coverage selection).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Use this threshold [0-1] instead of calibrating (threshold selection).")
    ] = None,
    deadline: Annotated[float, typer.Option(help="Seconds per question for all silo searches.")] = 10.0,
    per_silo: Annotated[
        int | None,
        typer.Option(
            help="Also draw up to N questions from each silo: the titles of the passages its card's centroids "
            "retrieve, so every silo is covered (default: 0 with a questions file, 20 without)."
        ),
    ] = None,
) -> None:
    """Label questions by asking every silo, train and calibrate the learned router, save it, report its routing."""
    import asyncio

    from federation.encoder import encoder_for
    from federation.identity import Identity
    from federation.membership import load_membership
    from federation.progress import progress
    from federation.signing import RequestSigner
    from gateway.fanout import SiloPool
    from gateway.router_training import MIN_EXAMPLES, label_questions, silo_questions, train_router
    from router import evaluate_routing

    if coverage is not None and threshold is not None:
        raise ConfigError("give --coverage or --threshold, not both")
    if selection is None:
        selection = "coverage" if coverage is not None or (model == "share" and threshold is None) else "threshold"
    if model not in ("share", "relevance") or selection not in ("coverage", "threshold"):
        raise ConfigError("--model is share or relevance; --selection is coverage or threshold")
    if selection == "coverage" and model != "share":
        raise ConfigError("coverage selection needs --model share")
    per_silo = per_silo if per_silo is not None else (0 if questions is not None else 20)
    if per_silo < 0:
        raise ConfigError("--per-silo must be 0 or more")
    supplied: list[str] = []
    if questions is not None:
        supplied = [line.strip() for line in questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif per_silo == 0:
        raise ConfigError("give a questions file, or --per-silo N to draw questions from the silos")
    membership = load_membership(federation)
    encoder = encoder_for(membership.embedding)
    settings = RetrievalSettings(deadline_s=deadline, breaker_failures=10**6)

    async def run() -> tuple[list[Any], list[Any]]:
        pool = SiloPool(membership, RequestSigner(Identity.load(key)), settings)
        try:
            by_silo = await silo_questions(pool, per_silo) if per_silo else {}
            known = {t.casefold() for t in supplied}
            drawn = [t for titles in by_silo.values() for t in titles if t.casefold() not in known]
            if len(supplied) + len(drawn) < 10:
                answered = sum(bool(titles) for titles in by_silo.values())
                source = f", {answered} of {len(by_silo)} silos answered" if per_silo else ""
                raise ConfigError(
                    f"{len(supplied) + len(drawn)} training questions ({len(supplied)} supplied, {len(drawn)} drawn "
                    f"from the silos{source}); at least 10 are needed"
                )
            with progress(console) as bar:
                task = bar.add_task("asking every silo", total=len(supplied) + len(drawn))
                labelled = [
                    await label_questions(texts, encoder=encoder, pool=pool, k=k, on_question=lambda: bar.advance(task))
                    if texts
                    else []
                    for texts in (supplied, drawn)
                ]
            return labelled[0], labelled[1]
        finally:
            await pool.aclose()

    from_file, from_silos = asyncio.run(run())
    examples = [*from_file, *from_silos]
    if per_silo:
        console.print(f"{len(from_silos)} questions drawn from the silos, {len(from_file)} supplied", highlight=False)
    if not examples:
        raise FedragError("no question retrieved anything from any silo; nothing to learn from")
    if unseen := unlabelled_silos(examples, [s.name for s in membership.silos]):
        console.print(
            f"[yellow]warning[/]: {len(unseen)} of {len(membership.silos)} silos hold no passage of any question's "
            f"top-{k}: {escape(', '.join(unseen))}. The router learns never to ask them; add questions about "
            "what they hold.",
            highlight=False,
        )
    options: dict[str, Any] = {
        "model": model,
        "selection": selection,
        "threshold": threshold,
        "coverage": coverage,
        "target_recall": recall,
    }
    # The held-out check: across kinds of question when there are both (trained on one, tested on the other),
    # else the second half of the questions.
    groups = None
    if len(from_file) >= MIN_EXAMPLES and len(from_silos) >= MIN_EXAMPLES:
        checks = [("the drawn questions", "the supplied", from_silos, from_file)]
        checks.append(("the supplied questions", "the drawn", from_file, from_silos))
        groups = ["supplied"] * len(from_file) + ["drawn"] * len(from_silos)  # calibrated holding out each kind
    else:
        half = len(examples) // 2
        checks = [("the first half", "the second", examples[:half], examples[half:])]
    try:
        router, found = train_router(examples, groups=groups, **options)
        held_out = [
            (on, off, evaluate_routing(train_router(part, **options)[0], rest)) for on, off, part, rest in checks
        ]
    except ValueError as exc:
        raise ConfigError(f"cannot train the router: {exc}") from exc
    router.save(out)
    setting = f"threshold {router.threshold:g}" if router.selection == "threshold" else f"coverage {router.coverage:g}"
    how = (
        f"calibrated for recall@{k} {recall:g}: {found.recall:.3f} asking {found.fraction_asked:.0%} of silos "
        + ("holding out each kind of question" if groups else "out of fold")
        if found is not None
        else "as given"
    )
    checked = "; ".join(
        f"trained on {on}, on {off}: recall@{k} {figures['recall']:.3f}, silo recall {figures['silo_recall']:.3f}, "
        f"asking {figures['fraction_asked']:.0%} of silos"
        for on, off, figures in held_out
    )
    console.print(
        f"trained a {router.model} model with {router.selection} selection, {setting} ({how}) on "
        f"{len(examples)} labelled questions; {checked}; saved {out}",
        highlight=False,
    )
