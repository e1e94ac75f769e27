"""Labelling questions for the learned router: which silos contribute when all silos are asked.

For each training question the gateway asks every silo (as the ``all`` router would),
merges the replies by score, and labels a silo relevant when at least one of its passages
is in the merged top-k. The examples feed :meth:`router.LearnedRouter.train`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from aggregation import ScoreMerger
from federation.encoder import Encoder
from gateway.fanout import SiloPool
from router import SiloView, TrainingExample


async def label_questions(
    questions: Sequence[str],
    *,
    encoder: Encoder,
    pool: SiloPool,
    k: int = 10,
    on_question: Callable[[], None] | None = None,
) -> list[TrainingExample]:
    """Ask every silo each question; return one labelled example per question that found anything."""
    await pool.refresh_cards(force=True)
    cards = {name: card for name in pool.names if (card := pool.card(name)) is not None}
    # The same features as at serving time (the pipeline embeds each card's description too).
    descriptions = encoder.encode([card.description or name for name, card in cards.items()])
    views = tuple(
        SiloView(name=name, card=card, description_vector=vector)
        for (name, card), vector in zip(cards.items(), descriptions, strict=True)
    )
    names = [v.name for v in views]
    vectors: np.ndarray = encoder.encode(list(questions))
    merger = ScoreMerger()
    examples = []
    for vector in vectors:
        outcomes = await pool.search(names, vector, k)
        merged = merger.merge({o.silo: o.passages for o in outcomes if o.status == "ok"}, k)
        relevant = frozenset(p.silo for p in merged)
        if relevant:
            examples.append(TrainingExample(query=vector, silos=views, relevant=relevant))
        if on_question is not None:
            on_question()
    return examples
