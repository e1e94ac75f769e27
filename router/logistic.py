"""L2-regularised logistic models in numpy, for the learned router.

:func:`fit_logistic` is a binary logistic regression, one independent row per (question,
silo). :func:`fit_grouped_softmax` is a conditional logit: the rows of one question form a
group, a softmax over the group predicts how a unit of mass (the all-silo top-k) splits
across its rows, and the targets are the observed fractions. Both are fitted by damped
Newton steps from zero, without randomness.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_MAX_NEWTON_STEPS = 100
_TOLERANCE = 1e-10


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, computed stably for large ``|z|``."""
    result: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return result


def fit_logistic(design: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Fit an L2-regularised logistic regression by damped Newton steps.

    Minimises ``mean(log-loss) + l2 / 2 * |beta[1:]|^2``: the first column of ``design``
    is the intercept and is not penalised. Deterministic: it starts from zero and uses
    no randomness.

    Args:
        design: the (rows, columns) design matrix, first column all ones.
        y: labels in {0, 1}, one per row.
        l2: the penalty (positive, so the problem has a unique minimum).

    Returns:
        The coefficients, one per column.
    """
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0
    n = y.size

    def objective(beta: np.ndarray) -> float:
        z = design @ beta
        loss = np.logaddexp(0.0, z) - y * z
        return float(loss.mean() + 0.5 * penalty @ (beta * beta))

    def derivatives(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = sigmoid(design @ beta)
        gradient = design.T @ (p - y) / n + penalty * beta
        hessian = (design.T * (p * (1.0 - p))) @ design / n + np.diag(penalty) + 1e-12 * np.eye(beta.size)
        return gradient, hessian

    return _damped_newton(objective, derivatives, design.shape[1])


def softmax(z: np.ndarray) -> np.ndarray:
    """The softmax of a 1-D array, computed stably."""
    e = np.exp(z - z.max())
    result: np.ndarray = e / e.sum()
    return result


def fit_grouped_softmax(design: np.ndarray, groups: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Fit an L2-regularised softmax within groups (a conditional logit) by damped Newton steps.

    Row ``i`` belongs to group ``groups[i]``; the model gives it the probability
    ``exp(x_i . beta) / sum(exp(x_j . beta) for j in its group)``. Minimises the mean over
    groups of the cross-entropy ``-sum(y_i * log p_i)`` plus ``l2 / 2 * |beta|^2``. A
    constant column would cancel within every group, so there is no intercept.

    Args:
        design: the (rows, columns) design matrix.
        groups: the group of each row, integers ``0 .. G-1`` (every group non-empty).
        y: the target fraction of each row, non-negative, summing to 1 within each group.
        l2: the penalty (positive, so the problem has a unique minimum).

    Returns:
        The coefficients, one per column.
    """
    count = int(groups.max()) + 1 if groups.size else 0
    d = design.shape[1]

    def probabilities(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = design @ beta
        top = np.full(count, -np.inf)
        np.maximum.at(top, groups, z)
        e = np.exp(z - top[groups])
        total = np.bincount(groups, weights=e, minlength=count)
        return e / total[groups], np.log(total) + top

    def objective(beta: np.ndarray) -> float:
        z = design @ beta
        _, log_total = probabilities(beta)
        loss = -(y * (z - log_total[groups])).sum() / count
        return float(loss + 0.5 * l2 * beta @ beta)

    def derivatives(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, _ = probabilities(beta)
        gradient = design.T @ (p - y) / count + l2 * beta
        weighted = design * p[:, None]
        mean = np.zeros((count, d))
        np.add.at(mean, groups, weighted)
        hessian = (weighted.T @ design - mean.T @ mean) / count + (l2 + 1e-12) * np.eye(d)
        return gradient, hessian

    return _damped_newton(objective, derivatives, d)


def _damped_newton(
    objective: Callable[[np.ndarray], float],
    derivatives: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    size: int,
) -> np.ndarray:
    """Minimise a smooth convex ``objective`` from zero by Newton steps halved until they descend."""
    beta = np.zeros(size)
    current = objective(beta)
    for _ in range(_MAX_NEWTON_STEPS):
        gradient, hessian = derivatives(beta)
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        scale = 1.0
        while scale > 1e-6:
            candidate = beta - scale * step
            value = objective(candidate)
            if value <= current:
                break
            scale *= 0.5
        else:
            break
        beta, improvement, current = candidate, current - value, value
        if float(np.abs(scale * step).max()) < _TOLERANCE or improvement < _TOLERANCE * 1e-2:
            break
    return beta
