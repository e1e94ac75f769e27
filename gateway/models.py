"""Which model answers a request: the base model or one of the served LoRA adapters, by model name.

The gateway serves the base model under its own name (``llm.model``) and each adapter of
``llm.adapters`` as ``fedrag:NAME``; ``GET /v1/models`` lists them. A request names one in its
``model`` field (a bare adapter ``NAME`` works too). A name in the ``fedrag:`` namespace that is
not served is refused (404 ``model_not_found``, with the names that are); any other name, and no
name, gets the default: ``llm.lora_adapter`` when set, else the base model. OpenAI clients must
send some model name, and many send a fixed one, so those keep working.
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.config import LLMEndpointSettings
from federation.errors import NotFound

ADAPTER_PREFIX = "fedrag:"


@dataclass(frozen=True)
class ModelChoice:
    """The model a request is answered with.

    Attributes:
        name: its public name (``llm.model``, or ``fedrag:NAME`` for an adapter).
        adapter: the served adapter's name, or None for the base model.
    """

    name: str
    adapter: str | None


def model_names(llm: LLMEndpointSettings) -> list[str]:
    """The public names: the base model, then ``fedrag:NAME`` per served adapter."""
    return [llm.model, *(ADAPTER_PREFIX + name for name in llm.served_adapters())]


def resolve_model(llm: LLMEndpointSettings, requested: str | None) -> ModelChoice:
    """The model a request naming ``requested`` gets.

    Raises:
        NotFound: ``requested`` is in the ``fedrag:`` namespace but not served (``model_not_found``).
    """
    adapters = llm.served_adapters()
    if requested == llm.model:
        return ModelChoice(llm.model, None)
    name = requested.removeprefix(ADAPTER_PREFIX) if requested else None
    if name in adapters:
        return ModelChoice(ADAPTER_PREFIX + name, name)
    if requested and requested.startswith(ADAPTER_PREFIX):
        raise NotFound(
            f"model {requested!r} is not served here; known models: {', '.join(model_names(llm))}",
            code="model_not_found",
        )
    if llm.lora_adapter:
        return ModelChoice(ADAPTER_PREFIX + llm.lora_adapter, llm.lora_adapter)
    return ModelChoice(llm.model, None)
