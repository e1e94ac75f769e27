"""HTTP routes of a silo node: thin routers over :class:`silo_node.service.SiloService`."""

from silo_node.api.health import metrics_router
from silo_node.api.health import router as health_router
from silo_node.api.operator import router as operator_router
from silo_node.api.search import router as search_router

__all__ = ["health_router", "metrics_router", "operator_router", "search_router"]
