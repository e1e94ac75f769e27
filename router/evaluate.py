"""Offline evaluation of a router against labelled questions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from router.base import Router
from router.training import TrainingExample


def evaluate_routing(
    router: Router, examples: Sequence[TrainingExample], *, max_silos: int | None = None
) -> dict[str, float]:
    """Measure how many silos a router asks, how many relevant ones it finds, and the recall it keeps.

    Args:
        router: the router under test.
        examples: labelled questions (``relevant``: silos that contribute to the top-k
            when all silos are asked).
        max_silos: the budget passed to every ``route`` call.

    Returns:
        ``silo_recall``: mean, over examples with at least one relevant silo, of the
        fraction of relevant silos selected (nan when no example has one);
        ``recall``: mean, over the same examples, of the share of the all-silo top-k held
        by the selected silos, which is the recall@k of the score-merged result against
        asking all silos (exact when the examples carry ``shares``; otherwise each
        relevant silo counts as an equal share);
        ``fraction_asked``: mean, over examples with at least one silo, of selected
        silos divided by the number of silos.

    Raises:
        ValueError: when ``examples`` is empty.
    """
    if not examples:
        raise ValueError("evaluate_routing needs at least one example")
    recalls: list[float] = []
    covered: list[float] = []
    fractions: list[float] = []
    for example in examples:
        selected = set(router.route(example.query, example.silos, max_silos=max_silos).selected)
        if example.silos:
            fractions.append(len(selected) / len(example.silos))
        if example.relevant:
            recalls.append(len(selected & example.relevant) / len(example.relevant))
            covered.append(sum(share for name, share in example.share_map().items() if name in selected))
    return {
        "silo_recall": float(np.mean(recalls)) if recalls else float("nan"),
        "recall": float(np.mean(covered)) if covered else float("nan"),
        "fraction_asked": float(np.mean(fractions)) if fractions else float("nan"),
    }
