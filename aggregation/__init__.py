"""Aggregation of silo results: the serving path.

Every silo reply is untrusted input: :func:`validate_reply` checks it against the
protocol and the :class:`ReplyLimits` and turns its hits into :class:`Passage` objects, or
raises :class:`InvalidReply` so that the silo counts as failed for this question. A
:class:`Merger` (``score``, ``rrf`` or ``calibrated``, see :func:`make_merger`) ranks the
passages of all silos together, :func:`deduplicate` removes near copies across silos,
:func:`assign_sources` numbers the sources and shows silo names or per-answer pseudonyms,
and :func:`pack_context` fits the result into the model's context budget.

Everything here is a pure function over values; the package imports only
:mod:`federation`, the standard library and numpy.
"""

from aggregation.dedup import deduplicate
from aggregation.mergers import CalibratedMerger, Merger, RRFMerger, ScoreMerger, make_merger
from aggregation.packing import approx_token_count, pack_context
from aggregation.provenance import SourceRef, assign_sources
from aggregation.validation import InvalidReply, Passage, ReplyLimits, validate_reply

__all__ = [
    "CalibratedMerger",
    "InvalidReply",
    "Merger",
    "Passage",
    "RRFMerger",
    "ReplyLimits",
    "ScoreMerger",
    "SourceRef",
    "approx_token_count",
    "assign_sources",
    "deduplicate",
    "make_merger",
    "pack_context",
    "validate_reply",
]
