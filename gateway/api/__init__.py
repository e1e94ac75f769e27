"""HTTP routes of the gateway: thin routers over :class:`gateway.pipeline.Pipeline`."""

from gateway.api.ask import router as ask_router
from gateway.api.chat import router as chat_router
from gateway.api.info import router as info_router
from gateway.api.retrieve import router as retrieve_router

__all__ = ["ask_router", "chat_router", "info_router", "retrieve_router"]
