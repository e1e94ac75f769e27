"""The membership file (``federation.toml``): who belongs to the federation and how they embed.

Layout::

    name = "demo"

    [embedding]
    model = "sentence-transformers/all-MiniLM-L6-v2"
    dimension = 384
    fingerprint = "sha256:..."

    [[silos]]
    name = "clinic-a"
    url = "https://clinic-a.example:8443"
    public_key = "<base64 raw Ed25519 key>"
    description = "Cardiology guidelines"

    [[gateways]]
    name = "gw-1"
    public_key = "<base64 raw Ed25519 key>"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from federation.errors import ConfigError
from federation.identity import PublicIdentity

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingSpec(_Entry):
    """The embedding model every party uses; a silo refuses vectors from another."""

    model: str = Field(min_length=1, description="Model id, e.g. sentence-transformers/all-MiniLM-L6-v2.")
    dimension: int = Field(ge=1, le=8192, description="Vector dimension.")
    fingerprint: str = Field(min_length=8, description="Hash identifying the model, its weights and the backend.")
    backend: Literal["torch", "openvino", "openvino-bf16"] = Field(
        "torch",
        description="What runs the model: torch (sentence-transformers), openvino (float32, faster on CPU) or "
        "openvino-bf16 (bfloat16 on CPUs that compute in it, faster still).",
    )


class _Party(_Entry):
    name: str = Field(pattern=NAME_PATTERN)
    public_key: str = Field(description="Base64 raw Ed25519 public key.")

    @field_validator("public_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        try:
            return PublicIdentity.from_b64(value).b64
        except ConfigError as exc:
            raise ValueError(exc.detail) from exc

    @property
    def identity(self) -> PublicIdentity:
        """The parsed public key."""
        return PublicIdentity.from_b64(self.public_key)

    @property
    def key_id(self) -> str:
        """The key id of this party's public key."""
        return self.identity.key_id


class SiloEntry(_Party):
    """A silo: where to reach it and what it holds."""

    url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$", description="Base URL of the silo's API.")
    description: str = Field("", max_length=2000)


class GatewayEntry(_Party):
    """A gateway allowed to search the silos."""


class Membership(_Entry):
    """The federation: its name, embedding contract, silos and gateways."""

    name: str = Field(pattern=NAME_PATTERN)
    embedding: EmbeddingSpec
    silos: tuple[SiloEntry, ...] = ()
    gateways: tuple[GatewayEntry, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Membership:
        names = [p.name for p in (*self.silos, *self.gateways)]
        dup_names = {n for n in names if names.count(n) > 1}
        if dup_names:
            raise ValueError(f"party names must be unique: {sorted(dup_names)}")
        keys = [p.public_key for p in (*self.silos, *self.gateways)]
        if len(set(keys)) != len(keys):
            raise ValueError("each party needs its own public key")
        return self

    def silo(self, name: str) -> SiloEntry:
        """Return the silo called ``name`` or raise :class:`ConfigError`."""
        for silo in self.silos:
            if silo.name == name:
                return silo
        raise ConfigError(f"silo '{name}' is not in federation '{self.name}'")

    def gateway_keys(self) -> dict[str, tuple[str, PublicIdentity]]:
        """Key id -> (gateway name, public key) for every gateway."""
        return {g.key_id: (g.name, g.identity) for g in self.gateways}

    def silo_keys(self) -> dict[str, str]:
        """Key id -> silo name for every silo."""
        return {s.key_id: s.name for s in self.silos}

    def with_silo(self, silo: SiloEntry) -> Membership:
        """Return a copy with ``silo`` added, or replacing the silo of the same name."""
        silos = (*(s for s in self.silos if s.name != silo.name), silo)
        return self.model_validate({**self.model_dump(), "silos": [s.model_dump() for s in silos]})

    def with_gateway(self, gateway: GatewayEntry) -> Membership:
        """Return a copy with ``gateway`` added, or replacing the gateway of the same name."""
        gateways = (*(g for g in self.gateways if g.name != gateway.name), gateway)
        return self.model_validate({**self.model_dump(), "gateways": [g.model_dump() for g in gateways]})


def load_membership(path: Path) -> Membership:
    """Read and validate a membership file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"membership file {path} not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return Membership.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc


def save_membership(path: Path, membership: Membership) -> None:
    """Write the membership file atomically (readers never see half a file)."""
    path = Path(path)
    data = membership.model_dump(mode="json")
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(tomli_w.dumps(data).encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
