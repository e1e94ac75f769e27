"""Privacy accounting for client-level differential privacy in federated training.

Under Flower's fixed-clipping DP wrappers every round releases the mean of clipped client
updates plus Gaussian noise of standard deviation ``noise_multiplier · clip / clients``:
one sampled Gaussian mechanism per round, with the clients (not the examples) as the
units of privacy. :func:`client_level_epsilon` composes ``rounds`` of them with Rényi DP.

flwr 1.42 ships an RDP accountant (``flwr.supercore.privacy_accounting.rdp_accountant``)
that needs Google's optional ``dp-accounting`` package (``flwr[dp]``); when that is not
installed, opacus' RDP analysis (the same mechanism and the same orders-based conversion
family) is used instead.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

from federation.errors import ConfigError

__all__ = ["client_level_epsilon"]

logger = logging.getLogger(__name__)

_MAX_POPULATION = 10**6
"""Denominator bound when flwr's accountant needs the sampling rate as clients / population."""


def client_level_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """The epsilon spent after ``rounds`` rounds of client-level DP-FedAvg.

    Args:
        noise_multiplier: Noise standard deviation over the clipping norm (``σ``).
        sample_rate: Probability that a client is sampled in a round (Poisson sampling);
            1.0 means every client every round (no amplification).
        rounds: Rounds released (each round counts, even if its aggregate is discarded).
        delta: Target delta, typically below one over the number of clients.

    Returns:
        The epsilon at ``delta`` (0.0 for zero rounds).

    Raises:
        ConfigError: An argument is out of range.
    """
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be positive and finite, got {noise_multiplier!r}")
    if not (0 < sample_rate <= 1):
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if rounds < 0:
        raise ConfigError(f"rounds must not be negative, got {rounds}")
    if not (0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    if rounds == 0:
        return 0.0
    try:
        return _flwr_epsilon(noise_multiplier, sample_rate, rounds, delta)
    except ImportError:
        logger.debug("flwr's RDP accountant needs dp-accounting; using opacus' RDP analysis")
        return _opacus_epsilon(noise_multiplier, sample_rate, rounds, delta)


def _flwr_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    rate = Fraction(sample_rate).limit_denominator(_MAX_POPULATION)
    method = SamplingMethod.NO_AMPLIFICATION if rate == 1 else SamplingMethod.POISSON
    config = PrivacyConfig(
        target_delta=delta,
        population_size=rate.denominator,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=method,
    )
    accountant = RdpAccountant(config)  # raises ImportError without dp-accounting
    event = GaussianPrivacyEvent(noise_multiplier, rate.numerator, rate.denominator)
    accountant.compose(event, count=rounds)
    return accountant.get_epsilon(delta)


def _opacus_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = list(RDPAccountant.DEFAULT_ALPHAS)
    rdp = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=rounds, orders=orders)
    epsilon, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(epsilon)
