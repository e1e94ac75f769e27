"""L2-regularised logistic regression in numpy, for the learned router."""

from __future__ import annotations

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

    beta = np.zeros(design.shape[1])
    current = objective(beta)
    for _ in range(_MAX_NEWTON_STEPS):
        p = sigmoid(design @ beta)
        gradient = design.T @ (p - y) / n + penalty * beta
        hessian = (design.T * (p * (1.0 - p))) @ design / n + np.diag(penalty) + 1e-12 * np.eye(beta.size)
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
