"""Differentially private selection and release of similarity scores.

Selection is the one-shot Gumbel mechanism of Durfee & Rogers (2019), "Practical
Differentially Private Top-k Selection with Pay-what-you-get Composition": adding
Gumbel noise of scale ``2 * sensitivity * k / epsilon`` to every score and keeping the
``k`` largest is distributed exactly like ``k`` rounds of the peeling exponential
mechanism, each round spending ``epsilon / k``; the whole selection is
``epsilon``-differentially private.

The selected scores are released through the Laplace mechanism (:func:`laplace_scores`).

Both guarantees are for neighbouring *score vectors* (each score moves by at most the
sensitivity, the same candidates on both sides). The silo's noisy selection feeds them
similarities clipped to [0, 1] (:func:`clip_score`), so a sensitivity of 1 holds; what
they do not give is privacy for a document added to or removed from the candidates, whose
text is released when it is picked (see :class:`federation.config.NoisySelectionSettings`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["SCORE_SENSITIVITY", "clip_score", "gumbel_top_k", "laplace_scores"]

SCORE_SENSITIVITY = 1.0
"""How far a clipped similarity can move: the whole of [0, 1]."""


def clip_score(score: float) -> float:
    """A cosine similarity clipped to [0, 1], the range over which the sensitivity of 1 holds."""
    return min(1.0, max(0.0, float(score)))


def _check_positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def gumbel_top_k(
    scores: npt.ArrayLike, k: int, epsilon: float, sensitivity: float, rng: np.random.Generator
) -> npt.NDArray[np.intp]:
    """Pick ``k`` indices of ``scores`` with the one-shot Gumbel mechanism.

    Args:
        scores: One-dimensional array of finite utility scores (higher is better).
        k: Number of indices to pick; at most ``len(scores)`` are returned.
        epsilon: Privacy loss of the whole selection (each pick spends ``epsilon / k``).
        sensitivity: Largest change one record can cause in any score.
        rng: Source of the noise.

    Returns:
        The picked indices, best noisy score first.

    Raises:
        ValueError: ``scores`` is not a finite 1-D array, ``k`` is negative, or
            ``epsilon`` or ``sensitivity`` is not positive.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite")
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    _check_positive("epsilon", epsilon)
    _check_positive("sensitivity", sensitivity)
    picks = min(k, values.size)
    if picks == 0:
        return np.empty(0, dtype=np.intp)
    scale = 2.0 * sensitivity * k / epsilon
    noisy = values + rng.gumbel(loc=0.0, scale=scale, size=values.size)
    top = np.argpartition(-noisy, picks - 1)[:picks] if picks < values.size else np.arange(values.size)
    order = np.argsort(-noisy[top], kind="stable")
    return top[order].astype(np.intp)


def laplace_scores(
    scores: npt.ArrayLike,
    epsilon: float,
    sensitivity: float,
    rng: np.random.Generator,
    *,
    low: float = -1.0,
    high: float = 1.0,
) -> npt.NDArray[np.float64]:
    """Release each score with Laplace noise of scale ``sensitivity / epsilon``, clamped.

    Clamping is post-processing and costs no privacy. Each released score spends
    ``epsilon``; releasing ``n`` of them spends ``n * epsilon``.

    Args:
        scores: The true scores.
        epsilon: Privacy loss of each released score.
        sensitivity: Largest change one record can cause in a score.
        rng: Source of the noise.
        low: Smallest value released.
        high: Largest value released.

    Returns:
        The noisy scores, clamped to ``[low, high]``.

    Raises:
        ValueError: ``epsilon`` or ``sensitivity`` is not positive, or ``low > high``.
    """
    _check_positive("epsilon", epsilon)
    _check_positive("sensitivity", sensitivity)
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    values = np.asarray(scores, dtype=np.float64)
    noisy = values + rng.laplace(loc=0.0, scale=sensitivity / epsilon, size=values.shape)
    return np.clip(noisy, low, high)
