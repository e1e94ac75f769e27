"""The gateway: the chat/QA service that answers questions from federated silo retrieval.

The five steps of a question run in :class:`gateway.pipeline.Pipeline` (embed, route with
:mod:`router`, fan out with :class:`gateway.fanout.SiloPool`, aggregate with
:mod:`aggregation`, generate with :class:`gateway.llm_client.LLMClient` and
:mod:`gateway.prompting`); :func:`gateway.app.create_app` serves it over HTTP. The gateway
never imports ``silo_node``: it reaches silos only through ``federation``'s client.
"""

from gateway.app import create_app
from gateway.fanout import CircuitBreaker, SiloOutcome, SiloPool
from gateway.llm_client import ChatDelta, ChatResult, LLMClient, LLMSettings
from gateway.pipeline import Pipeline, Retrieval
from gateway.prompting import NumberedSource, ParsedAnswer, build_messages, parse_answer

__all__ = [
    "ChatDelta",
    "ChatResult",
    "CircuitBreaker",
    "LLMClient",
    "LLMSettings",
    "NumberedSource",
    "ParsedAnswer",
    "Pipeline",
    "Retrieval",
    "SiloOutcome",
    "SiloPool",
    "build_messages",
    "create_app",
    "parse_answer",
]
