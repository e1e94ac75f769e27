"""Which model answers a request: the base model or one of the served LoRA adapters, by model name.

The gateway serves the base model under its own name (``llm.model``), each adapter of
``llm.adapters`` as ``fedrag:NAME``, and ``fedrag``, the gateway's default (``llm.lora_adapter``
when set, else the base model); ``GET /v1/models`` lists them. A request names one in its
``model`` field (a bare adapter ``NAME`` works too); ``/v1/ask`` may leave it out and gets the
default. ``fedrag-dp`` (with ``[dp_answer] enabled``) answers with differential privacy for the
silos' documents (:mod:`gateway.dp_answer`). Any other name is refused (404 ``model_not_found``,
with the names that are), as OpenAI's API does: a typo never answers silently with another model.
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.config import LLMEndpointSettings
from federation.errors import NotFound

ADAPTER_PREFIX = "fedrag:"
DEFAULT_MODEL = "fedrag"
DP_MODEL = "fedrag-dp"
"""Answers with differential privacy for the silos' documents (``[dp_answer]``, when enabled)."""


@dataclass(frozen=True)
class ModelChoice:
    """The model a request is answered with.

    Attributes:
        name: its public name (``llm.model``, or ``fedrag:NAME`` for an adapter).
        adapter: the served adapter's name, or None for the base model.
    """

    name: str
    adapter: str | None


def model_names(llm: LLMEndpointSettings, *, dp: bool = False) -> list[str]:
    """The public names: the default (``fedrag``), the base model, ``fedrag:NAME`` per served adapter, ``fedrag-dp``."""
    names = [DEFAULT_MODEL, llm.model, *(ADAPTER_PREFIX + name for name in llm.served_adapters())]
    return [*names, DP_MODEL] if dp else names


def resolve_model(llm: LLMEndpointSettings, requested: str | None, *, dp: bool = False) -> ModelChoice:
    """The model a request naming ``requested`` (None: no name) gets; ``dp``: whether ``fedrag-dp`` is served.

    Raises:
        NotFound: ``requested`` is not a served name (``model_not_found``).
    """
    if dp and requested == DP_MODEL:
        return ModelChoice(DP_MODEL, None)
    if requested == llm.model:
        return ModelChoice(llm.model, None)
    if requested is None or requested == DEFAULT_MODEL:
        if llm.lora_adapter:
            return ModelChoice(ADAPTER_PREFIX + llm.lora_adapter, llm.lora_adapter)
        return ModelChoice(llm.model, None)
    name = requested.removeprefix(ADAPTER_PREFIX)
    if name in llm.served_adapters():
        return ModelChoice(ADAPTER_PREFIX + name, name)
    raise NotFound(
        f"model {requested!r} is not served here; known models: {', '.join(model_names(llm, dp=dp))}",
        code="model_not_found",
    )
