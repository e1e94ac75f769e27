"""The federation contract every party shares.

Settings (:mod:`federation.config`), the membership file (:mod:`federation.membership`),
Ed25519 identities (:mod:`federation.identity`), request signing
(:mod:`federation.signing`), the wire protocol (:mod:`federation.protocol`), the embedding
encoder (:mod:`federation.encoder`), the signed silo client (:mod:`federation.client`) and
the error hierarchy (:mod:`federation.errors`). This package imports no other part.
"""

from federation.client import SiloClient
from federation.encoder import Encoder, SentenceTransformerEncoder
from federation.errors import ClientError, FedragError, ServerError
from federation.identity import Identity, PublicIdentity
from federation.membership import EmbeddingSpec, GatewayEntry, Membership, SiloEntry, load_membership, save_membership
from federation.protocol import Matrix, Problem, SearchHit, SearchRequest, SearchResponse, SiloCard
from federation.secrets import Secret
from federation.signing import RequestSigner, RequestVerifier

__all__ = [
    "ClientError",
    "EmbeddingSpec",
    "Encoder",
    "FedragError",
    "GatewayEntry",
    "Identity",
    "Matrix",
    "Membership",
    "Problem",
    "PublicIdentity",
    "RequestSigner",
    "RequestVerifier",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "Secret",
    "SentenceTransformerEncoder",
    "ServerError",
    "SiloCard",
    "SiloClient",
    "SiloEntry",
    "load_membership",
    "save_membership",
]
