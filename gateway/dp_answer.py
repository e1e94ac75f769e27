"""DP answers: an answer from the silos' passages with a differential-privacy guarantee per document (T1).

How one answer is made (the ``fedrag-dp`` model; settings ``[dp_answer]``):

1. **Voters read disjoint shards.** Every silo's documents are split into ``voters`` shards by a
   hash of their names (:func:`federation.protocol.shard_of`). Voter ``j`` reads the best
   ``passages_per_voter`` passages of shard ``j`` over all silos, so a document is read by at
   most one voter. Documents whose lifetime budget cannot pay for this answer are left out at
   the silos (``exclude_doc_ids``), as if absent.
2. **Charge first.** Every document a voter reads is charged the answer's epsilon in the
   durable ledger (:class:`gateway.privacy_ledger.DocumentLedger`) before anything is
   generated, by one answer at a time (:meth:`DPAnswerer.read`; across gateway processes the
   charge itself is atomic, and an answer whose documents were spent meanwhile reads again).
   A document no voter read changed nothing and is charged nothing.
3. **Free tokens, paid tokens.** Token by token, the model *without passages* proposes the next
   token for free. While paid tokens remain, each voter proposes its own; the sparse-vector test
   (:class:`gateway.dp_vote.SparseVectorTest`) asks whether enough of them disagree. If not, the
   free token is used and nothing is paid. If so, the vote (:func:`gateway.dp_vote.choose_token`)
   picks the token among the free model's top ``domain`` tokens, and one paid token is used up.
   With none left, the free model finishes the answer alone.

The answer costs at most ``max_paid_tokens * (epsilon_test + epsilon_token)`` per document and
says so; it cites nothing (which passage was read is what the guarantee hides).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aggregation import ScoreMerger
from aggregation.validation import Passage
from federation.config import DPAnswerSettings
from federation.errors import Unavailable
from federation.protocol import MAX_EXCLUDED_DOCS, Shard
from gateway.dp_vote import SparseVectorTest, answer_epsilon, choose_token, disagreement
from gateway.fanout import SiloOutcome, SiloPool
from gateway.privacy_ledger import DocumentKey, DocumentLedger
from gateway.token_client import LlamaCppTokens

__all__ = ["DPAnswer", "DPAnswerer", "Reading", "answer_messages", "read_shards"]

_SYSTEM = "You answer questions in one short sentence."
_SYSTEM_CHOICES = "You answer multiple-choice questions with the letter of the correct option only."
_MAX_FILTER_ROUNDS = 20
_END_TEXTS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>")


@dataclass
class Reading:
    """What the voters read for one answer, already charged to the ledger.

    Attributes:
        contexts: each voter's passages.
        read: the documents read (each charged the answer's epsilon).
        left_out: the documents left out because their budget is spent.
        failures: the outcomes of silos that did not answer (the answer is partial).
    """

    contexts: list[list[Passage]]
    read: list[DocumentKey]
    left_out: set[DocumentKey]
    failures: list[SiloOutcome]


@dataclass
class DPAnswer:
    """A DP answer and what it cost.

    Attributes:
        text: the answer.
        epsilon: its guarantee per document (``max_paid_tokens * (epsilon_test + epsilon_token)``).
        paid_tokens: tokens that used the passages.
        tokens: tokens generated.
        documents_read: documents the voters read (each charged ``epsilon``).
        documents_left_out: documents left out because their budget is spent.
        voters_with_passages: voters that had at least one passage to read.
    """

    text: str
    epsilon: float
    paid_tokens: int
    tokens: int
    documents_read: int
    documents_left_out: int
    voters_with_passages: int


def _choices_block(choices: Sequence[str] | None) -> str:
    if not choices:
        return ""
    return "\n" + "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(choices))


def answer_messages(question: str, choices: Sequence[str] | None, passages: Sequence[Passage]) -> list[dict[str, str]]:
    """The chat of one voter (its passages), or of the free model (none)."""
    system = _SYSTEM_CHOICES if choices else _SYSTEM
    asked = f"Question: {question}{_choices_block(choices)}"
    if passages:
        context = "\n\n".join(f"{p.title}\n{p.text}" for p in passages)
        asked = f"Passages:\n{context}\n\n{asked}"
    return [{"role": "system", "content": system}, {"role": "user", "content": asked}]


async def read_shards(
    pool: SiloPool,
    silos: Sequence[str],
    query: np.ndarray,
    settings: DPAnswerSettings,
    ledger: DocumentLedger,
    *,
    request_id: str | None = None,
) -> tuple[list[list[Passage]], set[DocumentKey], list[SiloOutcome]]:
    """Each voter's passages (its shard's best, over ``silos``), the documents left out, and the silos' outcomes.

    The outcomes are those of each voter's last search (failed silos make the answer partial).

    A shard's search is repeated, leaving out the documents that cannot pay, until none of them
    is among its best passages, so what a voter reads is exactly what it would read if those
    documents were absent.

    Raises:
        Unavailable: a shard still returned spent documents after many rounds (``privacy_filter``).
    """
    epsilon = settings.epsilon_per_answer
    merger = ScoreMerger()
    left_out: set[DocumentKey] = set()
    outcomes: list[SiloOutcome] = []

    async def one_voter(index: int) -> list[Passage]:
        excluded: set[str] = set()
        for _ in range(_MAX_FILTER_ROUNDS):
            replies = await pool.search(
                silos,
                query,
                settings.passages_per_voter,
                request_id=request_id,
                shard=Shard(count=settings.voters, index=index),
                exclude_doc_ids=sorted(excluded)[:MAX_EXCLUDED_DOCS] or None,
            )
            per_silo = {o.silo: o.passages for o in replies if o.status == "ok"}
            passages = merger.merge(per_silo, settings.passages_per_voter)
            keys = {(p.silo, p.doc_id) for p in passages}
            spent = keys - await asyncio.to_thread(ledger.affordable, keys, epsilon)
            if not spent:
                outcomes.extend(o for o in replies if o.status != "ok")
                return passages
            left_out.update(spent)
            excluded.update(doc for _, doc in spent)
        raise Unavailable("the privacy filter could not leave out every spent document", code="privacy_filter")

    contexts = await asyncio.gather(*(one_voter(j) for j in range(settings.voters)))
    return list(contexts), left_out, outcomes


class DPAnswerer:
    """Generates DP answers on a llama.cpp server (:class:`gateway.token_client.LlamaCppTokens`).

    Args:
        settings: the ``[dp_answer]`` settings.
        tokens: the token-level client of the LLM server.
        ledger: the documents' lifetime budgets.
        rng: the noise source (the OS's entropy by default).
    """

    def __init__(
        self,
        settings: DPAnswerSettings,
        *,
        tokens: LlamaCppTokens,
        ledger: DocumentLedger,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.ledger = ledger
        self._rng = rng if rng is not None else np.random.default_rng()
        self._end: frozenset[int] | None = None
        self._reading = asyncio.Lock()  # budgets are checked and charged by one answer at a time

    async def read(
        self, pool: SiloPool, silos: Sequence[str], query: np.ndarray, *, request_id: str | None = None
    ) -> Reading:
        """The voters' passages for ``query``, each document read charged, durably, before this returns.

        Raises:
            Unavailable: the ledger cannot be reached (``state_store_unavailable``), or other gateway
                processes kept spending what this answer read (``privacy_filter``).
        """
        async with self._reading:
            for _ in range(_MAX_FILTER_ROUNDS):
                contexts, left_out, failures = await read_shards(
                    pool, silos, query, self.settings, self.ledger, request_id=request_id
                )
                read = sorted({(p.silo, p.doc_id) for context in contexts for p in context})
                try:
                    if read:
                        await asyncio.to_thread(self.ledger.charge, read, self.epsilon)
                except ValueError:  # another gateway process spent one of them since: read again without it
                    continue
                return Reading(contexts=contexts, read=read, left_out=left_out, failures=failures)
        raise Unavailable("the documents read kept being spent by other answers", code="privacy_filter")

    @property
    def epsilon(self) -> float:
        """What one answer costs each document it reads."""
        return answer_epsilon(self.settings.max_paid_tokens, self.settings.epsilon_test, self.settings.epsilon_token)

    async def answer(self, question: str, reading: Reading, *, choices: Sequence[str] | None = None) -> DPAnswer:
        """Answer ``question`` from what the voters read (:meth:`read`)."""
        cfg = self.settings
        contexts = reading.contexts
        free_prompt = await self.tokens.chat_prompt(answer_messages(question, choices, ()))
        voter_prompts = await asyncio.gather(
            *(self.tokens.chat_prompt(answer_messages(question, choices, context)) for context in contexts if context)
        )
        threshold = cfg.threshold if cfg.threshold is not None else cfg.voters / 2
        test = SparseVectorTest(threshold, cfg.epsilon_test, self._rng)
        if self._end is None:
            self._end = frozenset(await self._end_ids())
        end_ids = self._end
        generated: list[int] = []
        paid = 0
        for _ in range(cfg.max_tokens):
            free = await self.tokens.next_tokens(free_prompt + generated, cfg.domain)
            token = free[0].id
            if paid < cfg.max_paid_tokens and voter_prompts:
                votes = [
                    c[0].id
                    for c in await asyncio.gather(*(self.tokens.next_tokens(p + generated, 1) for p in voter_prompts))
                ]
                votes += [free[0].id] * (cfg.voters - len(votes))  # no passages: it is the free model
                if test.above(disagreement(votes, token)):
                    token = choose_token(votes, [c.id for c in free], cfg.epsilon_token, self._rng)
                    paid += 1
            if token in end_ids:
                break
            generated.append(token)
        text = (await self.tokens.detokenize(generated)).strip() if generated else ""
        return DPAnswer(
            text=text,
            epsilon=self.epsilon,
            paid_tokens=paid,
            tokens=len(generated),
            documents_read=len(reading.read),
            documents_left_out=len(reading.left_out),
            voters_with_passages=len(voter_prompts),
        )

    async def _end_ids(self) -> list[int]:
        ids: list[int] = []
        for text in _END_TEXTS:
            found = await self.tokens.tokenize(text)
            if len(found) == 1:
                ids.append(found[0])
        if not ids:
            raise Unavailable("the LLM's end-of-turn token is unknown", code="llm_error")
        return ids
