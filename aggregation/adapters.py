"""Aggregation of federated LoRA adapters and soft prompts: the training path.

Pure functions over numpy arrays keyed by name; nothing here knows about Flower or torch.
The Flower strategies in :mod:`training.strategies` call them on every round.

Array naming (the contract with the client):

- A LoRA adapter is a mapping from peft state-dict names *without* the adapter name to
  arrays: ``<module>.lora_A.weight`` of shape ``(r, in_features)`` and
  ``<module>.lora_B.weight`` of shape ``(out_features, r)``, for instance
  ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``. The *module name* is
  the array name without its ``.lora_A.weight`` / ``.lora_B.weight`` suffix. The weight
  change an adapter makes to a module is ``ΔW = scaling · B · A`` with
  ``scaling = lora_alpha / r``.
- A soft prompt is one array named ``prompt_embeddings`` of shape
  ``(n_virtual_tokens, hidden)``.

Algorithms:

- :func:`fedavg_lora`: A and B averaged separately (FedIT). Inexact, because the mean of
  products is not the product of means; :func:`fedavg_lora_error` measures by how much.
- FFA-LoRA: A frozen at a shared seeded initialisation (:func:`ffa_lora_a`, called by
  server and clients alike), only B trained, sent and averaged (:func:`ffa_lora_aggregate`).
  Exact: ``mean(B) · A = mean(B · A)``.
- FLoRA: :func:`flora_stack` stacks the clients' adapters along the rank so that the
  stack's product is exactly the weighted sum of the clients' ``ΔW``, on top of the
  previous global stack; past ``max_rank`` the stack is compressed to its best rank-
  ``max_rank`` approximation (truncated SVD) and the error is reported.
- Soft prompts: :func:`average_prompts` (data-weighted mean) and :func:`cluster_prompts`
  (seeded, weighted k-means over the flattened prompts, ``k`` at most the clients).

Every client update is untrusted input: :func:`check_update` and :func:`check_fresh_lora`
verify names, shapes and finiteness against what was sent, and clip an update whose
norm is over :class:`UpdateLimits` (or reject it beyond a hard factor), each outcome
with a reason.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from federation.errors import ConfigError, ValidationFailed

__all__ = [
    "DEFAULT_MAX_RANK",
    "LORA_A_SUFFIX",
    "LORA_B_SUFFIX",
    "PROMPT_KEY",
    "FloraStack",
    "LoraPair",
    "PromptClusters",
    "UpdateCheck",
    "UpdateLimits",
    "Verdict",
    "average_arrays",
    "average_prompts",
    "check_fresh_lora",
    "check_update",
    "cluster_prompts",
    "fedavg_lora",
    "fedavg_lora_error",
    "ffa_lora_a",
    "ffa_lora_aggregate",
    "flora_stack",
    "lora_delta",
    "lora_module",
    "pair_lora_names",
    "svd_truncate",
    "weighted_mean",
]

FloatArray = npt.NDArray[np.float64]
Arrays = Mapping[str, npt.NDArray[np.floating]]
"""Named arrays: a LoRA adapter, a prompt, or any record of trainable tensors."""

LORA_A_SUFFIX = ".lora_A.weight"
LORA_B_SUFFIX = ".lora_B.weight"
PROMPT_KEY = "prompt_embeddings"
DEFAULT_MAX_RANK = 64
"""The largest adapter rank served, as vLLM's ``--max-lora-rank`` default allows."""


# -- names and weights ---------------------------------------------------------------------


@dataclass(frozen=True)
class LoraPair:
    """The two array names of one LoRA module.

    Attributes:
        module: The module name (array name without the LoRA suffix).
        a: Name of the ``(r, in_features)`` down-projection.
        b: Name of the ``(out_features, r)`` up-projection.
    """

    module: str
    a: str
    b: str


def lora_module(name: str) -> str:
    """The module name of a LoRA array name.

    Raises:
        ValidationFailed: ``name`` ends in neither LoRA suffix.
    """
    for suffix in (LORA_A_SUFFIX, LORA_B_SUFFIX):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    raise ValidationFailed(f"'{name}' is not a LoRA array name (*{LORA_A_SUFFIX} or *{LORA_B_SUFFIX})")


def pair_lora_names(names: Iterable[str]) -> dict[str, LoraPair]:
    """Pair the lora_A and lora_B names of each module.

    Returns:
        Module name → pair, in sorted module order.

    Raises:
        ValidationFailed: A name is not a LoRA name, or a module lacks its A or its B.
    """
    halves: dict[str, set[str]] = {}
    for name in names:
        halves.setdefault(lora_module(name), set()).add(name)
    pairs: dict[str, LoraPair] = {}
    for module in sorted(halves):
        a, b = module + LORA_A_SUFFIX, module + LORA_B_SUFFIX
        if halves[module] != {a, b}:
            missing = sorted({a, b} - halves[module])
            raise ValidationFailed(f"module '{module}' lacks {', '.join(missing)}")
        pairs[module] = LoraPair(module, a, b)
    return pairs


def _weights(weights: Sequence[float], count: int) -> FloatArray:
    """Normalise non-negative, finite weights with a positive sum."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (count,):
        raise ValidationFailed(f"expected {count} weights, got {w.size}")
    if count == 0:
        raise ValidationFailed("nothing to aggregate")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValidationFailed("weights must be finite, non-negative and not all zero")
    normalised: FloatArray = w / w.sum()
    return normalised


def weighted_mean(arrays: Sequence[npt.NDArray[np.floating]], weights: Sequence[float]) -> FloatArray:
    """The weighted mean of same-shaped arrays (weights are normalised to sum to one).

    Raises:
        ValidationFailed: Shapes differ, or the weights are negative, non-finite or all zero.
    """
    w = _weights(weights, len(arrays))
    shapes = {np.shape(x) for x in arrays}
    if len(shapes) != 1:
        raise ValidationFailed(f"arrays of different shapes cannot be averaged: {sorted(shapes)}")
    total = np.zeros(shapes.pop(), dtype=np.float64)
    for wi, x in zip(w, arrays, strict=True):
        total += wi * np.asarray(x, dtype=np.float64)
    return total


def average_arrays(states: Sequence[Arrays], weights: Sequence[float]) -> dict[str, FloatArray]:
    """Average named arrays key by key.

    Raises:
        ValidationFailed: The states do not hold the same names, or :func:`weighted_mean` fails.
    """
    if not states:
        raise ValidationFailed("nothing to aggregate")
    names = set(states[0])
    for state in states[1:]:
        if set(state) != names:
            raise ValidationFailed("states to average hold different array names")
    return {name: weighted_mean([s[name] for s in states], weights) for name in sorted(names)}


# -- LoRA: FedAvg and its error ------------------------------------------------------------


def lora_delta(state: Arrays, scaling: float = 1.0) -> dict[str, FloatArray]:
    """The weight change ``scaling · B · A`` of every module of an adapter."""
    return {
        module: scaling * (np.asarray(state[p.b], np.float64) @ np.asarray(state[p.a], np.float64))
        for module, p in pair_lora_names(state).items()
    }


def fedavg_lora(states: Sequence[Arrays], weights: Sequence[float]) -> dict[str, FloatArray]:
    """FedAvg of LoRA adapters: every A and every B averaged separately.

    Raises:
        ValidationFailed: The adapters are not LoRA pairs with the same names and shapes.
    """
    for state in states:
        pair_lora_names(state)
    return average_arrays(states, weights)


def fedavg_lora_error(states: Sequence[Arrays], weights: Sequence[float]) -> float:
    """How inexact FedAvg of LoRA is for these adapters.

    Returns:
        ``‖mean(B)·mean(A) − mean(B·A)‖_F / ‖mean(B·A)‖_F`` over all modules together
        (weighted means; a common scaling cancels). 0.0 when both are zero, ``inf`` when
        only the exact mean is.
    """
    w = _weights(weights, len(states)).tolist()
    averaged = lora_delta(fedavg_lora(states, w))
    deltas = [lora_delta(s) for s in states]
    num = den = 0.0
    for module, approx in averaged.items():
        exact = weighted_mean([d[module] for d in deltas], w)
        num += float(np.sum((approx - exact) ** 2))
        den += float(np.sum(exact**2))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return math.sqrt(num / den)


# -- FFA-LoRA ------------------------------------------------------------------------------


def ffa_lora_a(module: str, shape: tuple[int, int], seed: int) -> npt.NDArray[np.float32]:
    """The frozen FFA-LoRA A of one module, identical on every party.

    The stream is seeded from ``seed`` and the SHA-256 of the module name (stable across
    processes, unlike ``hash()``); values follow peft's default A initialisation
    (Kaiming-uniform with ``a=√5``: uniform on ``±1/√in_features``).

    Args:
        module: The module name, e.g. ``base_model.model.model.layers.0.self_attn.q_proj``.
        shape: ``(r, in_features)``.
        seed: The federation's FFA seed (sent as ``ffa-seed`` in the train config).

    Returns:
        A float32 array of ``shape``.
    """
    rank, fan_in = shape
    if rank < 1 or fan_in < 1:
        raise ValidationFailed(f"LoRA A shape must be positive, got {shape}")
    digest = hashlib.sha256(module.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    rng = np.random.default_rng(np.random.SeedSequence([seed, *words]))
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def ffa_lora_aggregate(b_states: Sequence[Arrays], weights: Sequence[float]) -> dict[str, FloatArray]:
    """FFA-LoRA aggregation: the weighted mean of the clients' B arrays.

    Raises:
        ValidationFailed: A state holds anything but lora_B arrays, or names differ.
    """
    for state in b_states:
        others = sorted(n for n in state if not n.endswith(LORA_B_SUFFIX))
        if others:
            raise ValidationFailed(f"FFA-LoRA aggregates lora_B arrays only, got {others[:3]}")
    return average_arrays(b_states, weights)


# -- FLoRA ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloraStack:
    """The global FLoRA adapter after one round.

    Attributes:
        arrays: lora_A ``(R, in)`` and lora_B ``(out, R)`` per module, the scaling folded
            into B (``ΔW = B · A``, effective scale 1).
        ranks: Module name → stacked rank ``R`` (at most the cap).
        truncation_error: ``‖ΔW − ΔW_kept‖_F / ‖ΔW‖_F`` over all modules together, where the
            SVD cap dropped rank; 0.0 when nothing was dropped.
    """

    arrays: dict[str, FloatArray]
    ranks: dict[str, int]
    truncation_error: float


def svd_truncate(a: FloatArray, b: FloatArray, rank: int) -> tuple[FloatArray, FloatArray, float, float]:
    """The best rank-``rank`` factors of ``B · A`` (Eckart–Young), without forming it.

    Returns:
        ``(a_k, b_k, dropped, total)``: factors with ``b_k · a_k`` the truncated SVD of
        ``B · A`` (singular values split evenly), the Frobenius norm of what was dropped
        and of ``B · A``.
    """
    qb, rb = np.linalg.qr(b)
    qa, ra = np.linalg.qr(a.T)
    u, s, vt = np.linalg.svd(rb @ ra.T, full_matrices=False)
    k = min(rank, s.size)
    root = np.sqrt(s[:k])
    b_k: FloatArray = (qb @ u[:, :k]) * root
    a_k: FloatArray = root[:, None] * (vt[:k] @ qa.T)
    return a_k, b_k, float(np.sqrt(np.sum(s[k:] ** 2))), float(np.sqrt(np.sum(s**2)))


def _drop_null_components(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Remove rank components whose B column or A row is zero (they add nothing to B · A)."""
    keep = np.any(b != 0, axis=0) & np.any(a != 0, axis=1)
    return a[keep], b[:, keep]


def flora_stack(
    previous: Arrays,
    updates: Sequence[Arrays],
    weights: Sequence[float],
    scalings: Sequence[float],
    *,
    max_rank: int = DEFAULT_MAX_RANK,
) -> FloraStack:
    """FLoRA: stack the clients' fresh adapters on top of the previous global stack.

    Per module, ``A_new = [A_prev; A_1; …; A_n]`` (along the rank) and
    ``B_new = [B_prev, w_1·s_1·B_1, …, w_n·s_n·B_n]``, so that
    ``B_new · A_new = B_prev · A_prev + Σ w_i · s_i · B_i · A_i`` exactly, with ``w`` the
    normalised weights. Components that are zero are dropped; a module whose rank is
    still above ``max_rank`` is replaced by its best rank-``max_rank`` approximation.

    Args:
        previous: The previous global stack (scaling folded into B); zero-rank arrays or
            an all-zero B (a fresh peft adapter) stand for "nothing yet".
        updates: The clients' adapters trained this round, any rank each.
        weights: Client weights (data sizes), normalised here.
        scalings: Each client's ``lora_alpha / r``.
        max_rank: The rank cap.

    Raises:
        ValidationFailed: Names, shapes or arguments do not fit together.
    """
    if max_rank < 1:
        raise ValidationFailed(f"max_rank must be at least 1, got {max_rank}")
    w = _weights(weights, len(updates))
    if len(scalings) != len(updates) or not all(math.isfinite(s) and s > 0 for s in scalings):
        raise ValidationFailed("one positive, finite scaling per update is required")
    pairs = pair_lora_names(previous)
    for update in updates:
        if set(update) != set(previous):
            raise ValidationFailed("an update's array names differ from the global stack's")
    arrays: dict[str, FloatArray] = {}
    ranks: dict[str, int] = {}
    dropped_sq = total_sq = 0.0
    for module, p in pairs.items():
        a_parts = [np.asarray(previous[p.a], np.float64)]
        b_parts = [np.asarray(previous[p.b], np.float64)]
        for wi, si, update in zip(w, scalings, updates, strict=True):
            a_parts.append(np.asarray(update[p.a], np.float64))
            b_parts.append(wi * si * np.asarray(update[p.b], np.float64))
        try:
            a, b = np.concatenate(a_parts, axis=0), np.concatenate(b_parts, axis=1)
        except ValueError as exc:
            raise ValidationFailed(f"module '{module}': adapters do not stack: {exc}") from exc
        if a.shape[0] != b.shape[1]:
            raise ValidationFailed(f"module '{module}': A rank {a.shape[0]} differs from B rank {b.shape[1]}")
        a, b = _drop_null_components(a, b)
        if a.shape[0] > max_rank:
            a, b, dropped, total = svd_truncate(a, b, max_rank)
            dropped_sq += dropped**2
            total_sq += total**2
        elif a.shape[0]:
            total_sq += float(np.sum((b @ a) ** 2))
        arrays[p.a], arrays[p.b], ranks[module] = a, b, a.shape[0]
    error = math.sqrt(dropped_sq / total_sq) if total_sq > 0 else 0.0
    return FloraStack(arrays=arrays, ranks=ranks, truncation_error=error)


# -- soft prompts --------------------------------------------------------------------------


def average_prompts(prompts: Sequence[npt.NDArray[np.floating]], weights: Sequence[float]) -> FloatArray:
    """The data-weighted mean of the clients' soft prompts ``(n_virtual_tokens, hidden)``."""
    if any(np.ndim(p) != 2 for p in prompts):
        raise ValidationFailed("a soft prompt is a 2-D (n_virtual_tokens, hidden) array")
    return weighted_mean(prompts, weights)


@dataclass(frozen=True)
class PromptClusters:
    """Soft prompts grouped by k-means.

    Attributes:
        centroids: ``(k, n_virtual_tokens, hidden)``, each the weighted mean of its members.
        assignments: Cluster index of each input prompt, in input order.
        inertia: Weighted sum of squared distances to the assigned centroids (weights
            normalised to sum to one).
    """

    centroids: FloatArray
    assignments: tuple[int, ...]
    inertia: float

    @property
    def sizes(self) -> list[int]:
        """How many prompts each cluster holds."""
        counts = np.bincount(np.asarray(self.assignments, dtype=np.int64), minlength=len(self.centroids))
        return [int(c) for c in counts]


def _kmeans_pp(x: FloatArray, w: FloatArray, k: int, rng: np.random.Generator) -> FloatArray:
    """k-means++ seeding, weighted by ``w``."""
    centers = [x[rng.choice(len(x), p=w)]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.asarray(centers)[None]) ** 2).sum(-1), axis=1)
        p = w * d2
        centers.append(x[rng.choice(len(x), p=p / p.sum())] if p.sum() > 0 else x[rng.integers(len(x))])
    return np.asarray(centers, dtype=np.float64)


def _lloyd(
    x: FloatArray, w: FloatArray, centers: FloatArray, max_iter: int
) -> tuple[FloatArray, npt.NDArray[np.int64], float]:
    """Weighted Lloyd iterations from ``centers``; an emptied cluster takes the farthest point."""
    k, rows = len(centers), np.arange(len(x))
    labels = np.full(len(x), -1, dtype=np.int64)
    centers = centers.copy()
    for _ in range(max_iter):
        d2 = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
        new = np.argmin(d2, axis=1)
        counts = np.bincount(new, minlength=k)
        for empty in np.flatnonzero(counts == 0):
            movable = counts[new] > 1
            far = int(np.argmax(np.where(movable, d2[rows, new], -1.0)))
            counts[new[far]] -= 1
            new[far] = empty
            counts[empty] = 1
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = labels == j
            mass = w[members].sum()
            centers[j] = (w[members, None] * x[members]).sum(0) / mass if mass > 0 else x[members].mean(0)
    d2 = ((x - centers[labels]) ** 2).sum(-1)
    return centers, labels, float(np.sum(w * d2))


def cluster_prompts(
    prompts: Sequence[npt.NDArray[np.floating]],
    k: int,
    *,
    seed: int,
    weights: Sequence[float] | None = None,
    init: npt.NDArray[np.floating] | None = None,
    n_init: int = 8,
    max_iter: int = 100,
) -> PromptClusters:
    """Seeded, weighted k-means over the flattened soft prompts.

    Args:
        prompts: The clients' prompts, all of one shape.
        k: Clusters wanted; at most ``len(prompts)`` are made.
        seed: Seed of the k-means++ starts (same seed, same clusters).
        weights: Client weights (data sizes); equal when omitted.
        init: Previous centroids ``(k, n, h)`` to start from (keeps cluster indices stable
            across rounds); used when it has exactly the clusters to be made.
        n_init: k-means++ starts tried when there is no ``init``; the lowest inertia wins.
        max_iter: Lloyd iterations per start at most.

    Raises:
        ValidationFailed: ``k`` below one, prompts of different shapes or non-finite values.
    """
    if k < 1 or n_init < 1 or max_iter < 1:
        raise ValidationFailed("k, n_init and max_iter must be at least 1")
    if not prompts:
        raise ValidationFailed("nothing to cluster")
    shapes = {np.shape(p) for p in prompts}
    if len(shapes) != 1:
        raise ValidationFailed(f"prompts of different shapes cannot be clustered: {sorted(shapes)}")
    shape = shapes.pop()
    x = np.stack([np.asarray(p, np.float64).ravel() for p in prompts])
    if not np.all(np.isfinite(x)):
        raise ValidationFailed("prompts must be finite")
    w = _weights(weights if weights is not None else [1.0] * len(prompts), len(prompts))
    k = min(k, len(prompts))
    if init is not None and np.shape(init) == (k, *shape):
        starts = [np.asarray(init, np.float64).reshape(k, -1)]
    else:
        rng = np.random.default_rng(seed)
        starts = [_kmeans_pp(x, w, k, rng) for _ in range(n_init)]
    best = min((_lloyd(x, w, c, max_iter) for c in starts), key=lambda result: result[2])
    centers, labels, inertia = best
    return PromptClusters(
        centroids=centers.reshape(k, *shape),
        assignments=tuple(int(j) for j in labels),
        inertia=inertia,
    )


# -- validation of client updates ----------------------------------------------------------


class Verdict(StrEnum):
    """What became of one client update."""

    ACCEPTED = "accepted"
    CLIPPED = "clipped"
    REJECTED = "rejected"


@dataclass(frozen=True)
class UpdateLimits:
    """Bounds on the L2 norm of a client update.

    Attributes:
        max_norm: An update whose norm is above this is scaled down to it; ``None`` turns
            clipping (and rejection by norm) off.
        reject_factor: An update whose norm is above ``reject_factor · max_norm`` is
            rejected instead (``math.inf``: never).
    """

    max_norm: float | None = None
    reject_factor: float = 10.0

    def __post_init__(self) -> None:
        if self.max_norm is not None and not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise ConfigError(f"max_norm must be positive and finite, got {self.max_norm!r}")
        if math.isnan(self.reject_factor) or self.reject_factor < 1:
            raise ConfigError(f"reject_factor must be at least 1, got {self.reject_factor!r}")


@dataclass(frozen=True)
class UpdateCheck:
    """The outcome of checking one client update.

    Attributes:
        verdict: Accepted, clipped or rejected.
        reason: Why, in words (``"ok"`` when accepted as sent).
        arrays: The arrays to aggregate (clipped when so), float64; empty when rejected.
        norm: The update's norm before clipping; NaN when it was not reached.
    """

    verdict: Verdict
    reason: str
    arrays: dict[str, FloatArray]
    norm: float = math.nan

    @property
    def accepted(self) -> bool:
        """Whether the update goes into the aggregate (as sent or clipped)."""
        return self.verdict is not Verdict.REJECTED


def _rejected(reason: str, norm: float = math.nan) -> UpdateCheck:
    return UpdateCheck(Verdict.REJECTED, reason, {}, norm)


def _screen(update: Arrays, expected: Iterable[str]) -> tuple[dict[str, FloatArray], str | None]:
    """Check names, dtypes and finiteness; return the update as float64 or a reason."""
    expected = set(expected)
    if set(update) != expected:
        missing, extra = sorted(expected - set(update)), sorted(set(update) - expected)
        return {}, f"array names differ from what was sent: missing {missing[:3]}, unexpected {extra[:3]}"
    arrays: dict[str, FloatArray] = {}
    for name in sorted(update):
        value = np.asarray(update[name])
        if not np.issubdtype(value.dtype, np.floating):
            return {}, f"'{name}' has dtype {value.dtype}, not floating point"
        if not np.all(np.isfinite(value)):
            return {}, f"'{name}' holds non-finite values"
        arrays[name] = value.astype(np.float64)
    return arrays, None


def _bound(norm: float, limits: UpdateLimits) -> tuple[float, str | None]:
    """The clip factor for an update of ``norm``, or a rejection reason."""
    if limits.max_norm is None or norm <= limits.max_norm:
        return 1.0, None
    if norm > limits.reject_factor * limits.max_norm:
        return 0.0, f"update norm {norm:.4g} above {limits.reject_factor:g} × bound {limits.max_norm:.4g}"
    return limits.max_norm / norm, None


def check_update(update: Arrays, sent: Arrays, limits: UpdateLimits) -> UpdateCheck:
    """Check an update that has the same names and shapes as what was sent.

    The update's norm is that of ``update − sent`` over all arrays together; when clipped
    the result is ``sent + f · (update − sent)`` with the norm brought to the bound.
    """
    arrays, reason = _screen(update, sent)
    if reason:
        return _rejected(reason)
    base = {name: np.asarray(sent[name], np.float64) for name in arrays}
    for name, value in arrays.items():
        if value.shape != base[name].shape:
            return _rejected(f"'{name}' has shape {value.shape}, expected {base[name].shape}")
    norm = math.sqrt(sum(float(np.sum((arrays[n] - base[n]) ** 2)) for n in arrays))
    factor, reason = _bound(norm, limits)
    if reason:
        return _rejected(reason, norm)
    if factor < 1.0:
        clipped = {n: base[n] + factor * (arrays[n] - base[n]) for n in arrays}
        return UpdateCheck(Verdict.CLIPPED, f"update norm {norm:.4g} clipped to {limits.max_norm:.4g}", clipped, norm)
    return UpdateCheck(Verdict.ACCEPTED, "ok", arrays, norm)


def check_fresh_lora(
    update: Arrays, stack: Arrays, scaling: float, limits: UpdateLimits, *, max_rank: int = DEFAULT_MAX_RANK
) -> UpdateCheck:
    """Check a fresh LoRA adapter trained on top of the broadcast FLoRA stack.

    The adapter must have the stack's names, ``A`` of shape ``(r, in)`` and ``B`` of shape
    ``(out, r)`` with the stack's ``in``/``out`` and ``1 ≤ r ≤ max_rank``, and finite
    values. Its norm is that of the weight change ``scaling · B · A`` over all modules;
    when clipped, every B is scaled so that the change has the bound's norm.
    """
    if not (math.isfinite(scaling) and scaling > 0):
        return _rejected(f"LoRA scaling must be positive and finite, got {scaling!r}")
    arrays, reason = _screen(update, stack)
    if reason:
        return _rejected(reason)
    sq = 0.0
    for module, p in pair_lora_names(stack).items():
        a, b = arrays[p.a], arrays[p.b]
        fan_in, fan_out = np.shape(stack[p.a])[1], np.shape(stack[p.b])[0]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != fan_in or b.shape[0] != fan_out or a.shape[0] != b.shape[1]:
            return _rejected(f"module '{module}': shapes A {a.shape}, B {b.shape} do not fit ({fan_out}×{fan_in})")
        if not 1 <= a.shape[0] <= max_rank:
            return _rejected(f"module '{module}': rank {a.shape[0]} outside 1..{max_rank}")
        sq += float(np.sum((scaling * (b @ a)) ** 2))
    norm = math.sqrt(sq)
    factor, reason = _bound(norm, limits)
    if reason:
        return _rejected(reason, norm)
    if factor < 1.0:
        clipped = {n: v * factor if n.endswith(LORA_B_SUFFIX) else v for n, v in arrays.items()}
        return UpdateCheck(Verdict.CLIPPED, f"update norm {norm:.4g} clipped to {limits.max_norm:.4g}", clipped, norm)
    return UpdateCheck(Verdict.ACCEPTED, "ok", arrays, norm)
