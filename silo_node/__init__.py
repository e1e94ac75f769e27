"""The silo node: the service a data owner runs over a private index.

Ingest → chunk → embed → store (:mod:`silo_node.store`) → index (:mod:`silo_node.index`),
the release policy (:mod:`silo_node.policy`), the authenticated app
(:func:`silo_node.app.create_app`) and the operator CLI (:mod:`silo_node.cli`).
"""

from silo_node.service import SiloService

__all__ = ["SiloService"]
