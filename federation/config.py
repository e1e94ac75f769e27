"""Typed, closed configuration for every part (the one place that reads ``FEDRAG_*``).

A silo's settings live in ``DIR/silo.toml`` (written by ``fedrag silo init``); any field
can be overridden by an environment variable ``FEDRAG_SILO_<FIELD>``, nested fields with
``__`` (``FEDRAG_SILO_POLICY__MAX_K=5``). Unknown keys are errors, not silent defaults.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import tomli_w
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from federation.errors import ConfigError
from federation.secrets import Secret

logger = logging.getLogger(__name__)

SILO_CONFIG_FILE = "silo.toml"
STATE_URL_SCHEMES = ("redis", "rediss", "unix")


def _check_state_url(url: Secret) -> Secret:
    if urlsplit(url.reveal()).scheme not in STATE_URL_SCHEMES:  # the message never repeats the URL (a password)
        raise ValueError("state_url must be a redis://, rediss:// or unix:// URL")
    return url


StateURL = Annotated[Secret, AfterValidator(_check_state_url)]
"""A Redis URL, ``redis://[:PASSWORD@]HOST:PORT/DB``: a secret, since it may carry a password."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IndexSettings(_Section):
    """Which vector index a silo keeps and how it is tuned."""

    backend: Literal["faiss", "hnswlib", "exact"] = Field(
        "faiss", description="faiss (flat below the threshold, approximate above), hnswlib, or exact numpy search."
    )
    approximate_threshold: int = Field(
        20_000, ge=1, description="FAISS: vector count above which the flat index is replaced by an approximate one."
    )
    faiss_approximate: Literal["hnsw", "ivf"] = Field("hnsw", description="FAISS approximate index kind.")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree (FAISS HNSW and hnswlib).")
    hnsw_ef_construction: int = Field(200, ge=8, le=4096, description="HNSW build-time beam width.")
    hnsw_ef_search: int = Field(128, ge=1, le=4096, description="HNSW search-time beam width (recall vs speed).")
    ivf_nlist: int | None = Field(None, ge=1, description="FAISS IVF list count; default 4*sqrt(n).")
    ivf_nprobe: int = Field(32, ge=1, description="FAISS IVF lists probed per query (recall vs speed).")
    use_gpu: bool = Field(True, description="Use FAISS GPU indexes when faiss.get_num_gpus() > 0.")
    search_threads: int = Field(
        1, ge=1, le=256, description="OpenMP threads FAISS uses per query (the worker pool runs queries in parallel)."
    )


class SearchSettings(_Section):
    """How a silo ranks its passages for a question: dense, lexical (BM25) or both fused."""

    mode: Literal["dense", "lexical", "hybrid"] = Field(
        "dense",
        description=(
            "dense: the query embedding alone; lexical: SQLite FTS5 BM25 over the question's words; "
            "hybrid: both, fused by reciprocal rank. lexical and hybrid need the question's text, which "
            "gateways then send to this silo (its card says so); a search without it is dense."
        ),
    )
    rrf_k: int = Field(60, ge=1, le=10_000, description="Hybrid: the k of reciprocal rank fusion, 1/(k + rank).")
    candidates: int = Field(
        50, ge=1, le=1000, description="Lexical and hybrid: hits each ranking contributes before fusion."
    )


class ChunkingSettings(_Section):
    """How documents are split into passages."""

    max_chars: int = Field(1000, ge=50, le=100_000, description="Upper bound on a chunk's length in characters.")
    overlap_chars: int = Field(150, ge=0, description="Characters carried over from the previous chunk.")
    max_file_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Files larger than this are refused at ingestion.")
    batch_size: int = Field(64, ge=1, le=4096, description="Chunks embedded per encoder call.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.overlap_chars >= self.max_chars:
            raise ValueError("chunking.overlap_chars must be smaller than chunking.max_chars")
        return self


class NoisySelectionSettings(_Section):
    """Noisy top-k selection of the released passages, with per-client epsilon budgets.

    What it is: the one-shot Gumbel mechanism picks the released passages among the
    candidates whose similarity (clipped to [0, 1]) reaches a public ``relevance_threshold``,
    and Laplace noise is added to the released scores. The epsilon it spends is the
    exponential mechanism's, for neighbouring databases in which one candidate's score moves
    by at most 1.

    What it is not: differential privacy for the silo's documents. A passage it selects is
    released verbatim, so a document that is present can be returned and an absent one never
    is: under the usual neighbouring relation (one document added or removed) the privacy
    loss is unbounded (``tests/unit/silo_node/test_privacy_loss.py`` computes it). It blurs
    ranks and scores; it does not hide membership or content.
    """

    enabled: bool = Field(False, description="Select released passages with noise (no document-level guarantee).")
    epsilon_per_query: float = Field(
        1.0, gt=0, description="Epsilon one search spends on its noisy selection and scores, per moved score."
    )
    relevance_threshold: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Public threshold: only passages whose clipped similarity reaches it are candidates.",
    )
    max_candidates: int = Field(
        200,
        ge=1,
        le=10_000,
        description="Most candidates fetched from the index; more above the threshold are cut by rank (logged).",
    )
    budget_per_window: float = Field(20.0, gt=0, description="Epsilon a client may spend per window; 429 after.")
    window_s: float = Field(3600.0, gt=0, description="Length of the budget window in seconds.")


class TrainingPolicySettings(_Section):
    """Whether and how the silo takes part in federated training (``fedrag silo train-node``).

    Training reads the silo's documents locally; only adapter or prompt updates leave.
    """

    allowed: bool = Field(False, description="Take part in federated training runs (off: train-node refuses).")
    require_record_dp: bool = Field(
        True, description="Train only with record-level DP-SGD inside the silo (a run without it is refused)."
    )
    max_epsilon: float = Field(
        8.0, gt=0, description="Record-level epsilon the silo will spend on one run; training stops before."
    )
    max_examples: int = Field(2000, ge=1, description="Most training examples built from the silo's documents.")


CrawlControl = Literal["crawl_limit", "self_query", "sweep"]
CRAWL_CONTROLS: tuple[CrawlControl, ...] = ("crawl_limit", "self_query", "sweep")


class CrawlSettings(_Section):
    """Crawl resistance per gateway key (threat model T2): rate limits and detection, not differential privacy.

    Within a sliding window of ``window_s`` seconds, per gateway key, each control named in
    ``controls``: ``crawl_limit``, at most a cap of *distinct* chunks released (re-released chunks
    are free); ``self_query``, at most ``max_self_queries`` searches whose best similarity to a
    stored chunk reaches ``self_query_similarity`` (a query that is a chunk's own embedding, the
    step of a snowball crawl); ``sweep``, of the key's last ``sweep_queries`` searches, at least
    ``sweep_new_share`` of the released chunks new to the key while their median best score stays
    below ``sweep_max_score`` (no real question asked). A search that would break one gets 429
    with that control's name as its code and Retry-After, releases nothing, and writes one
    ``crawl_alert`` audit record.
    """

    enabled: bool = Field(False, description="Enforce the crawl controls (recommended for any silo with a gateway).")
    controls: list[CrawlControl] = Field(
        default_factory=lambda: list(CRAWL_CONTROLS),
        description="The controls enforced when enabled (each is also the 429's code).",
    )
    window_s: float = Field(3600.0, gt=0, description="Length of the sliding window in seconds.")
    max_distinct_chunks: int = Field(
        500, ge=1, description="Most distinct chunks one gateway key may receive per window."
    )
    max_distinct_share: float = Field(
        0.02,
        gt=0,
        le=1,
        description="Most distinct chunks per key and window as a share of the silo's chunks (at least max_k); "
        "the smaller cap applies.",
    )
    self_query_similarity: float = Field(
        0.97, gt=0, le=1, description="A search whose best cosine to a stored chunk reaches this is a self-query."
    )
    max_self_queries: int = Field(20, ge=0, description="Self-queries one key may make per window; 429 after.")
    sweep_queries: int = Field(
        20, ge=2, le=10_000, description="Sweep detection looks at a key's last this many searches in the window."
    )
    sweep_new_share: float = Field(
        0.9, gt=0, le=1, description="Sweep: least share of the released chunks that were new to the key."
    )
    sweep_max_score: float = Field(0.3, ge=-1, le=1, description="Sweep: the median best score stays below this.")

    @model_validator(mode="after")
    def _controls_once(self) -> CrawlSettings:
        if len(set(self.controls)) != len(self.controls):
            raise ValueError("policy.crawl.controls names a control twice")
        return self


class ReleasePolicySettings(_Section):
    """What may leave the silo, enforced before any reply is sent."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_dp(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dp" in data:
            old = data["dp"]
            if isinstance(old, dict) and not old.get("enabled", False):  # off: nothing to decide, drop it
                logger.warning("ignoring the disabled [policy.dp] section: it is [policy.noisy_selection] now")
                return {key: value for key, value in data.items() if key != "dp"}
            raise ValueError(
                "[policy.dp] is now [policy.noisy_selection]: it selects passages with noise but gives no "
                "differential privacy for documents (a selected passage leaves verbatim); candidate_pool and "
                "sensitivity are replaced by relevance_threshold and max_candidates (scores are clipped to [0, 1])"
            )
        return data

    max_k: int = Field(10, ge=1, le=1000, description="Most passages one search may release.")
    min_score: float = Field(0.0, ge=-1.0, le=1.0, description="Passages scoring below this never leave.")
    release_text: bool = Field(True, description="Release passage text (false: ids, titles and scores only).")
    redact_pii: bool = Field(True, description="Redact e-mails, phones, national ids, record numbers, birth dates.")
    redaction_patterns: dict[str, str] = Field(
        default_factory=dict, description="Extra named regular expressions to redact, e.g. {staff_id = 'S-\\d{6}'}."
    )
    noisy_selection: NoisySelectionSettings = Field(default_factory=NoisySelectionSettings)
    training: TrainingPolicySettings = Field(default_factory=TrainingPolicySettings)
    crawl: CrawlSettings = Field(default_factory=CrawlSettings)
    audit_log: bool = Field(True, description="Append every request to DIR/audit.jsonl.")


class CardSettings(_Section):
    """What the silo publishes about itself for routing."""

    centroids: int = Field(16, ge=1, le=1024, description="k-means centroids of the silo's embeddings.")
    centroid_noise_std: float = Field(0.0, ge=0, description="Std of Gaussian noise added to each centroid.")
    count_round_to: int = Field(1, ge=1, description="Publish the chunk count rounded to a multiple of this.")
    count_noise_scale: float = Field(0.0, ge=0, description="Laplace scale of noise added to the published count.")
    seed: int = Field(0, description="Seed of k-means and the card's noise.")


class SiloSettings(BaseSettings):
    """Everything a silo node needs to run; read from ``DIR/silo.toml`` and ``FEDRAG_SILO_*``."""

    model_config = SettingsConfigDict(
        env_prefix="FEDRAG_SILO_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
        hide_input_in_errors=True,  # an invalid state_url may hold a password
    )

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Silo name.")
    description: str = Field("", max_length=2000, description="What the silo holds, published on its card.")
    federation_file: Path = Field(description="The federation's membership file (federation.toml).")
    key_file: Path = Field(description="The silo's Ed25519 private key (PEM).")
    operator_token_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the operator token; the token itself is never stored here."
    )
    max_body_bytes: int = Field(256 * 1024, ge=1024, description="Largest request body accepted on /v1/search.")
    clock_skew_s: float = Field(30.0, gt=0, le=600, description="Accepted distance of a signature's created time.")
    replay_cache_size: int = Field(100_000, ge=100, description="Nonces remembered against replay.")
    worker_threads: int = Field(2, ge=1, le=64, description="Threads for index, encoder and store work.")
    state_url: StateURL | None = Field(
        None,
        description="Redis URL (redis://[:PASSWORD@]HOST:PORT/DB) where the nonce replay cache is kept, shared by "
        "every worker serving this silo; unset: in this process's memory (one worker).",
    )
    index: IndexSettings = Field(default_factory=IndexSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    policy: ReleasePolicySettings = Field(default_factory=ReleasePolicySettings)
    card: CardSettings = Field(default_factory=CardSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables override the file (and the file overrides defaults)."""
        return (env_settings, init_settings)


def load_silo_settings(silo_dir: Path) -> SiloSettings:
    """Read ``silo_dir/silo.toml`` with environment overrides; relative paths resolve in ``silo_dir``."""
    path = Path(silo_dir) / SILO_CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: run 'fedrag silo init {silo_dir}' first")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        settings = SiloSettings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc
    base = Path(silo_dir).resolve()
    settings.federation_file = (base / settings.federation_file).resolve()
    settings.key_file = (base / settings.key_file).resolve()
    return settings


def write_silo_settings(silo_dir: Path, settings: SiloSettings) -> Path:
    """Write ``settings`` to ``silo_dir/silo.toml`` (every field, so operators see the knobs)."""
    path = Path(silo_dir) / SILO_CONFIG_FILE
    data: dict[str, Any] = settings.model_dump(mode="json", exclude_none=True)
    if settings.state_url is not None:  # secrets dump redacted; the file keeps what the operator gave
        data["state_url"] = settings.state_url.reveal()
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each invalid field and why (for ConfigError messages)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class LLMEndpointSettings(_Section):
    """The OpenAI-compatible chat server that writes the answers (vLLM, or the embedded llama.cpp)."""

    base_url: str = Field("http://127.0.0.1:8080", description="Server base URL (without /v1).")
    model: str = Field("smollm2-135m-instruct", min_length=1, description="Model name sent with each request.")
    api_key: Secret | None = Field(None, description="Bearer key for the LLM server, if it needs one.")
    lora_adapter: str | None = Field(
        None, description="The default adapter: requests that name no served model are answered with it."
    )
    adapters: list[str] = Field(
        default_factory=list,
        description="LoRA adapters the server serves, asked for as model 'fedrag:NAME'. llama.cpp: in the order of "
        "'fedrag llm serve --lora' (a name's position is its adapter id); vLLM: the names of --lora-modules.",
    )
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Seconds to wait for a whole answer.")
    parallel: int = Field(
        1,
        ge=1,
        le=1024,
        description="Requests the server decodes at once (its slots: 'fedrag llm serve --parallel', vLLM's "
        "max-num-seqs); the gateway runs at most this many generations together.",
    )
    max_tokens: int = Field(384, ge=1, le=32_768, description="Most tokens generated per answer.")
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature.")
    context_tokens: int = Field(2048, ge=256, description="The model's context window, for packing passages.")
    answer_format: Literal["structured", "free"] = Field(
        "structured",
        description="structured: the server must follow a JSON schema (reasoning, answer, citations of existing "
        "sources; llama.cpp and vLLM enforce it); free: free text with <think> or reasoning_content, for reasoning "
        "models served with a reasoning parser.",
    )
    server: Literal["llama.cpp", "vllm", "openai"] = Field(
        "llama.cpp",
        description="The server's kind, for its anti-repetition sampling fields: llama.cpp (repeat_penalty, DRY), "
        "vllm (repetition_penalty), openai (frequency_penalty only).",
    )
    repetition_penalty: float = Field(
        1.1, ge=1.0, le=2.0, description="Penalty on recently generated tokens (1: off); llama.cpp and vLLM."
    )
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="OpenAI frequency penalty (every server).")
    dry_multiplier: float = Field(
        0.8, ge=0.0, le=5.0, description="llama.cpp DRY sampler strength against repeated sequences (0: off)."
    )
    loop_guard: bool = Field(True, description="Stop generation when the answer starts repeating itself.")
    reasoning_chars: int = Field(
        400, ge=0, le=20_000, description="Structured: most characters of reasoning (0: answer without it)."
    )
    answer_chars: int = Field(800, ge=20, le=20_000, description="Structured: most characters of the answer.")

    @model_validator(mode="after")
    def _adapters_served(self) -> LLMEndpointSettings:
        if len(set(self.adapters)) != len(self.adapters):
            raise ValueError("llm.adapters names an adapter twice")
        if self.server == "llama.cpp" and self.lora_adapter and self.lora_adapter not in self.adapters:
            # llama.cpp selects an adapter by its position, so the default must be listed.
            raise ValueError(f"llm.lora_adapter {self.lora_adapter!r} must be one of llm.adapters (llama.cpp)")
        return self

    def served_adapters(self) -> list[str]:
        """The adapters the server serves: ``adapters``, and for vLLM a default adapter named only there."""
        extra = [self.lora_adapter] if self.lora_adapter and self.lora_adapter not in self.adapters else []
        return [*self.adapters, *extra]


class GroundingSettings(_Section):
    """Checks of the answer against its sources, and abstention when the sources are too weak."""

    check: bool = Field(True, description="Check each claim of the answer against the sources it cites.")
    support_threshold: float = Field(
        0.6, ge=-1, le=1, description="Least encoder similarity of a claim and a cited passage for support."
    )
    add_missing_citations: bool = Field(
        True, description="Give an uncited claim the source that supports it best (marked as added by the gateway)."
    )
    require_citation: bool = Field(True, description="Structured: the reply must cite at least one source.")
    abstain_below: float | None = Field(
        0.37,
        ge=-1,
        le=1,
        description="Answer that the sources do not contain the answer, without asking the LLM, when the best "
        "passage's retrieval score is below this (None: never). The default is calibrated on both evaluation "
        "suites together (make eval); a federation should calibrate its own (medical alone gives 0.57).",
    )


DEFAULT_SILO_BUDGET = 4


class RetrievalSettings(_Section):
    """How the gateway routes, searches and merges."""

    router: Literal["all", "centroid", "learned"] = Field("centroid", description="Routing strategy.")
    router_threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Centroid router: least best-centroid similarity (None: 0.3). Learned router: select by "
        "threshold, at least this score (None: the rule and setting saved with the model).",
    )
    router_coverage: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Learned router with a share model: select by coverage, the fewest silos whose predicted "
        "shares reach this fraction (None: the rule and setting saved with the model).",
    )
    router_top_m: int = Field(3, ge=1, description="Centroid router: most silos selected above the threshold.")
    router_model: Path | None = Field(None, description="Learned router model file (fedrag router train).")
    router_guard: bool = Field(
        False,
        description="Learned router: also ask the silo whose card centroid is closest to the question when the "
        "model leaves it out (a guard for questions unlike the training questions; at most one more silo).",
    )
    max_silos: int | None = Field(
        None,
        ge=1,
        le=256,
        description=f"Cost budget: most silos asked per question (unset: {DEFAULT_SILO_BUDGET} for the centroid "
        "and learned routers, every silo for the all router).",
    )
    k_per_silo: int = Field(5, ge=1, le=100, description="Passages asked of each silo.")
    k: int = Field(8, ge=1, le=100, description="Passages kept after merging.")
    merger: Literal["score", "rrf", "calibrated"] = Field("score", description="How silo results are merged.")
    dedup_threshold: float = Field(0.85, gt=0, le=1, description="Jaccard similarity at which passages are duplicates.")
    deadline_s: float = Field(3.0, gt=0, le=120, description="Per-question deadline for all silo searches.")
    show_silo_names: bool = Field(True, description="Show silo names in citations (false: per-answer pseudonyms).")
    send_question_text: bool = Field(
        True,
        description="Send the question's text to silos whose card says they search lexically or hybrid "
        "(false: silos receive the embedding only and search dense).",
    )
    card_refresh_s: float = Field(300.0, gt=0, description="How often silo cards are fetched again.")
    breaker_failures: int = Field(3, ge=1, description="Consecutive failures that open a silo's circuit breaker.")
    breaker_open_s: float = Field(30.0, gt=0, description="How long an open breaker skips its silo.")

    def silo_budget(self) -> int | None:
        """The most silos a question asks (None: every silo): ``max_silos``, or the router's default."""
        if self.max_silos is not None:
            return self.max_silos
        return None if self.router == "all" else DEFAULT_SILO_BUDGET


class AdmissionSettings(_Section):
    """Bounds on concurrent work: beyond a bound and its queue a request gets 429 with Retry-After."""

    generation_queue: int = Field(8, ge=0, le=10_000, description="Answers waiting for a free LLM slot.")
    retrievals: int = Field(16, ge=1, le=10_000, description="Retrieval-only requests (/v1/retrieve) at once.")
    retrieval_queue: int = Field(64, ge=0, le=100_000, description="Retrieval-only requests waiting.")
    queue_wait_s: float = Field(
        20.0, gt=0, le=600, description="Longest wait for a slot; a request still waiting then gets 429."
    )


class ConversationSettings(_Section):
    """How a follow-up question in a conversation is made searchable on its own."""

    condense: Literal["llm", "history", "off"] = Field(
        "llm",
        description="llm: the LLM rewrites the last question as a standalone one (history when it is slow, down "
        "or its rewrite unusable); history: the recent user turns, joined; off: the last message alone.",
    )
    condense_timeout_s: float = Field(4.0, gt=0, le=60, description="Longest wait for the LLM's rewrite.")
    history_messages: int = Field(6, ge=1, le=50, description="Earlier messages the rewrite (or the join) sees.")


class DPAnswerSettings(_Section):
    """Answers with differential privacy for every silo document (threat model T1): the ``fedrag-dp`` model.

    Each answer is ``max_paid_tokens * (epsilon_test + epsilon_token)``-DP for each document of
    the silos (one document added or removed), whatever the voters read; each document may be
    read by answers worth at most ``document_budget`` over its life.
    """

    enabled: bool = Field(False, description="Serve the fedrag-dp model: DP answers, no citations.")
    voters: int = Field(4, ge=2, le=64, description="Voters, each reading its own shard of every silo's documents.")
    passages_per_voter: int = Field(2, ge=1, le=20, description="Passages each voter reads.")
    epsilon_test: float = Field(1.0, gt=0, description="Epsilon of the sparse-vector test, per paid token.")
    epsilon_token: float = Field(3.0, gt=0, description="Epsilon of the vote that picks a paid token.")
    max_paid_tokens: int = Field(2, ge=1, le=64, description="Tokens per answer that may use the passages.")
    threshold: float | None = Field(
        None, description="Voters disagreeing with the model without passages before a token is paid (None: half)."
    )
    domain: int = Field(20, ge=2, le=100, description="The tokens a vote ranges over: the free model's top ones.")
    max_tokens: int = Field(48, ge=1, le=512, description="Most tokens of one answer.")
    document_budget: float = Field(20.0, gt=0, description="Lifetime epsilon of each document over all answers.")
    ledger_file: Path = Field(
        Path("privacy-ledger.db"),
        description="Where each document's spent epsilon is kept (SQLite, durable), unless the gateway has a "
        "state_url (then in Redis, shared by every gateway given it).",
    )

    @property
    def epsilon_per_answer(self) -> float:
        """The guarantee of one answer, per document."""
        return self.max_paid_tokens * (self.epsilon_test + self.epsilon_token)

    @model_validator(mode="after")
    def _affordable(self) -> DPAnswerSettings:
        if self.epsilon_per_answer > self.document_budget:
            raise ValueError(
                f"one answer costs {self.epsilon_per_answer:g} per document, more than document_budget "
                f"{self.document_budget:g}: no document could ever be read"
            )
        return self


class GatewaySettings(BaseSettings):
    """A gateway's settings; flags of ``fedrag gateway serve`` and ``FEDRAG_GATEWAY_*`` variables."""

    model_config = SettingsConfigDict(
        env_prefix="FEDRAG_GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
        hide_input_in_errors=True,  # an invalid state_url may hold a password
    )

    federation_file: Path = Field(description="The federation's membership file.")
    key_file: Path = Field(description="The gateway's Ed25519 private key (PEM), listed in the membership file.")
    api_keys_file: Path | None = Field(None, description="Hashed end-user API keys (fedrag gateway keys add).")
    rate_limit_per_minute: int = Field(60, ge=1, description="Requests per minute per API key (429 beyond).")
    max_question_chars: int = Field(4000, ge=1, description="Longest accepted question.")
    max_body_bytes: int = Field(256 * 1024, ge=1024, description="Largest request body.")
    allow_llm_only: bool = Field(False, description="Answer without sources when no silo could be searched.")
    state_url: StateURL | None = Field(
        None,
        description="Redis URL (redis://[:PASSWORD@]HOST:PORT/DB) where the per-key rate limits and the DP answers' "
        "privacy ledger are kept, shared by every gateway process given it; unset: in this process (memory, and "
        "dp_answer.ledger_file).",
    )
    llm: LLMEndpointSettings = Field(default_factory=LLMEndpointSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    grounding: GroundingSettings = Field(default_factory=GroundingSettings)
    conversation: ConversationSettings = Field(default_factory=ConversationSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    dp_answer: DPAnswerSettings = Field(default_factory=DPAnswerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values (CLI flags) override the environment."""
        return (init_settings, env_settings)


class AdapterTrainingSettings(_Section):
    """The adapter every party trains."""

    rank: int = Field(8, ge=1, le=64, description="LoRA rank (vLLM serves ranks up to --max-lora-rank).")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"], min_length=1, description="Linear layers that get a LoRA."
    )
    virtual_tokens: int = Field(16, ge=1, le=256, description="Soft prompt length (prompt strategies).")
    max_rank: int = Field(64, ge=1, le=512, description="FLoRA: the stacked rank is cut (SVD) to this.")
    seed: int = Field(0, description="Seeds every shared initialisation (FFA-LoRA's frozen A, the prompt).")


class LocalTrainingSettings(_Section):
    """What each silo does in one round, on its own examples."""

    learning_rate: float = Field(2e-3, gt=0, le=1, description="AdamW learning rate.")
    epochs: float = Field(1.0, gt=0, le=100, description="Passes over the silo's training examples per round.")
    batch_size: int = Field(4, ge=1, le=256, description="Examples per step (expected batch under DP-SGD).")
    max_steps: int = Field(0, ge=0, description="Cap on steps per round (0: none).")
    max_length: int = Field(768, ge=64, le=8192, description="Longest example in tokens; longer ones are skipped.")
    max_examples: int = Field(200, ge=1, description="Most examples a silo builds (capped by its own policy).")
    held_out: float = Field(0.25, ge=0, lt=1, description="Share of each silo's documents kept for evaluation.")
    sources: int = Field(2, ge=1, le=10, description="Passages per training prompt (the answer and distractors).")
    passage_chars: int = Field(240, ge=40, le=4000, description="Each training passage clipped to this length.")
    retrieval_order_share: float = Field(
        0.65,
        ge=0,
        le=1,
        description="Share of examples whose sources keep the silo's retrieval order; the rest put the answer"
        " at a random position (0.65 and citation_weight 5: the best measured, bench/RESULTS.md).",
    )
    citation_weight: float = Field(
        5.0, gt=0, le=100, description="Loss weight of the reply tokens that are the cited source's number."
    )
    qa_file: str | None = Field(
        None, description="QA pairs (JSONL) inside each silo directory; absent: questions from its documents."
    )
    threads: int = Field(1, ge=1, le=256, description="Torch CPU threads per silo.")


class RecordDPSettings(_Section):
    """Record-level DP-SGD inside each silo (Opacus): protects each training example."""

    enabled: bool = Field(False, description="Train every silo with DP-SGD.")
    noise_multiplier: float = Field(1.0, ge=0, description="Noise std over the per-example clipping norm.")
    max_grad_norm: float = Field(1.0, gt=0, description="Per-example gradient clipping norm.")
    delta: float = Field(1e-5, gt=0, lt=1, description="The delta epsilon is reported at.")


class ClientDPSettings(_Section):
    """Client-level DP at the server (Flower's fixed-clipping wrapper): protects each silo's whole update."""

    enabled: bool = Field(False, description="Clip each silo's update and add Gaussian noise to the aggregate.")
    noise_multiplier: float = Field(0.5, ge=0, description="Noise std over the clipping norm.")
    clipping_norm: float = Field(1.0, gt=0, description="Each update's L2 norm is clipped to this.")
    delta: float = Field(1e-5, gt=0, lt=1, description="The delta epsilon is reported at.")


class SecureAggregationSettings(_Section):
    """SecAgg+ (Flower): the server learns only the sum of the silos' updates."""

    enabled: bool = Field(False, description="Aggregate with SecAgg+ (needs at least 3 silos).")
    num_shares: int = Field(3, ge=2, description="Shares each silo's secret is split into.")
    reconstruction_threshold: int = Field(2, ge=2, description="Shares needed to reconstruct (dropouts tolerated).")
    clipping_range: float = Field(8.0, gt=0, description="Values are clipped to ± this before quantisation.")
    quantization_range: int = Field(4_194_304, ge=2, description="Quantisation levels.")


class DeploymentSiloSettings(_Section):
    """A silo that ``fedrag train run`` starts a SuperNode for (local deployments)."""

    name: str = Field(min_length=1, max_length=64, description="The silo's name (for logs and reports).")
    dir: Path = Field(description="The silo's data directory (relative paths: from the config file).")


class DeploymentSettings(_Section):
    """Where the run executes: Flower's deployment engine."""

    superlink: str = Field(
        "local",
        description="'local': start a SuperLink and one SuperNode per listed silo on loopback; "
        "or HOST:PORT of a running SuperLink whose SuperNodes the silo operators started.",
    )
    silos: list[DeploymentSiloSettings] = Field(default_factory=list, description="Local deployments: the silos.")
    tls: bool = Field(True, description="Local deployments: TLS between SuperLink and SuperNodes (own CA).")
    node_auth: bool = Field(True, description="Local deployments: SuperNode authentication (registered keys).")
    root_certificates: Path | None = Field(None, description="Remote SuperLink: its CA certificate (TLS).")
    min_nodes: int = Field(2, ge=1, description="Silos that must be connected before round 1.")
    round_timeout_s: float = Field(1800.0, gt=0, description="Seconds to wait for the silos' replies per round.")
    start_timeout_s: float = Field(300.0, gt=0, description="Seconds to wait for min_nodes silos to connect.")


class TrainRunSettings(BaseModel):
    """One federated training run (``fedrag train run --config FILE``); it travels to every silo."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    strategy: Literal["fedavg-lora", "ffa-lora", "flora", "prompt-avg", "prompt-cluster"] = Field(
        "ffa-lora", description="Aggregation strategy (training.strategies)."
    )
    rounds: int = Field(3, ge=1, le=10_000, description="Federated rounds.")
    output: Path = Field(Path("train-out"), description="Where the adapter and the report are written.")
    clusters: int = Field(2, ge=1, description="prompt-cluster: number of prompt clusters.")
    evaluate: Literal["every-round", "last-round"] = Field(
        "last-round",
        description="Federated evaluation after every round, or only the last (earlier rounds' held-out loss "
        "then comes from the next round's training replies: one ClientApp start less per silo per round).",
    )
    max_update_norm: float | None = Field(
        None, gt=0, description="Updates with a larger L2 norm are clipped (10x larger: rejected)."
    )
    adapter: AdapterTrainingSettings = Field(default_factory=AdapterTrainingSettings)
    local: LocalTrainingSettings = Field(default_factory=LocalTrainingSettings)
    record_dp: RecordDPSettings = Field(default_factory=RecordDPSettings)
    client_dp: ClientDPSettings = Field(default_factory=ClientDPSettings)
    secure_aggregation: SecureAggregationSettings = Field(default_factory=SecureAggregationSettings)
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)

    @model_validator(mode="after")
    def _compatible(self) -> TrainRunSettings:
        if self.client_dp.enabled and self.strategy in ("flora", "prompt-cluster"):
            raise ValueError(f"client-level DP cannot wrap {self.strategy}; use fedavg-lora, ffa-lora or prompt-avg")
        if self.secure_aggregation.enabled and self.strategy in ("flora", "prompt-cluster"):
            raise ValueError(f"secure aggregation gives only sums; {self.strategy} needs each update")
        sa = self.secure_aggregation
        if sa.enabled and sa.reconstruction_threshold >= sa.num_shares:
            raise ValueError("secure_aggregation.reconstruction_threshold must be below num_shares")
        return self


def load_train_settings(path: Path) -> TrainRunSettings:
    """Read a training run's TOML file; relative paths resolve from the file's directory."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        settings = TrainRunSettings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc
    base = Path(path).resolve().parent
    settings.output = (base / settings.output).resolve()
    for silo in settings.deployment.silos:
        silo.dir = (base / silo.dir).resolve()
    if settings.deployment.root_certificates is not None:
        settings.deployment.root_certificates = (base / settings.deployment.root_certificates).resolve()
    return settings
