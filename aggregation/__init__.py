"""Aggregation of silo results (the serving path) and of adapters and prompts (the training path).

Every silo reply is untrusted input: :func:`validate_reply` checks it against the
protocol and the :class:`ReplyLimits` and turns its hits into :class:`Passage` objects, or
raises :class:`InvalidReply` so that the silo counts as failed for this question. A
:class:`Merger` (``score``, ``rrf`` or ``calibrated``, see :func:`make_merger`) ranks the
passages of all silos together, :func:`deduplicate` removes near copies across silos,
:func:`assign_sources` numbers the sources and shows silo names or per-answer pseudonyms,
and :func:`pack_context` fits the result into the model's context budget.

On the training path, :mod:`aggregation.adapters` aggregates federated LoRA adapters
(:func:`fedavg_lora`, FFA-LoRA with :func:`ffa_lora_a`, FLoRA with :func:`flora_stack`) and
soft prompts (:func:`average_prompts`, :func:`cluster_prompts`), and screens every client
update first (:func:`check_update`, :func:`check_fresh_lora`).

Everything here is a pure function over values; the package imports only
:mod:`federation`, the standard library and numpy.
"""

from aggregation.adapters import (
    DEFAULT_MAX_RANK,
    LORA_A_SUFFIX,
    LORA_B_SUFFIX,
    PROMPT_KEY,
    FloraStack,
    LoraPair,
    PromptClusters,
    UpdateCheck,
    UpdateLimits,
    Verdict,
    average_arrays,
    average_prompts,
    check_fresh_lora,
    check_update,
    cluster_prompts,
    fedavg_lora,
    fedavg_lora_error,
    ffa_lora_a,
    ffa_lora_aggregate,
    flora_stack,
    lora_delta,
    lora_module,
    pair_lora_names,
    svd_truncate,
    weighted_mean,
)
from aggregation.dedup import deduplicate
from aggregation.mergers import CalibratedMerger, Merger, RRFMerger, ScoreMerger, make_merger
from aggregation.packing import approx_token_count, pack_context
from aggregation.provenance import SourceRef, assign_sources
from aggregation.validation import InvalidReply, Passage, ReplyLimits, validate_reply

__all__ = [
    "DEFAULT_MAX_RANK",
    "LORA_A_SUFFIX",
    "LORA_B_SUFFIX",
    "PROMPT_KEY",
    "CalibratedMerger",
    "FloraStack",
    "InvalidReply",
    "LoraPair",
    "Merger",
    "Passage",
    "PromptClusters",
    "RRFMerger",
    "ReplyLimits",
    "ScoreMerger",
    "SourceRef",
    "UpdateCheck",
    "UpdateLimits",
    "Verdict",
    "approx_token_count",
    "assign_sources",
    "average_arrays",
    "average_prompts",
    "check_fresh_lora",
    "check_update",
    "cluster_prompts",
    "deduplicate",
    "fedavg_lora",
    "fedavg_lora_error",
    "ffa_lora_a",
    "ffa_lora_aggregate",
    "flora_stack",
    "lora_delta",
    "lora_module",
    "make_merger",
    "pack_context",
    "pair_lora_names",
    "svd_truncate",
    "validate_reply",
    "weighted_mean",
]
