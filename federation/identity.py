"""Ed25519 identities: key pairs on disk, public keys in the membership file, key ids."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.errors import ConfigError

PRIVATE_KEY_FILE = "private.pem"
PUBLIC_KEY_FILE = "public.pem"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key_id_for(public_raw: bytes) -> str:
    """Derive a key id from a raw 32-byte Ed25519 public key (base64url of a SHA-256 prefix)."""
    return "ed25519-" + _b64url(hashlib.sha256(public_raw).digest()[:16])


@dataclass(frozen=True)
class PublicIdentity:
    """A party's public key and the key id derived from it."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ConfigError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> str:
        """Stable key id: ``ed25519-`` + base64url of the first 16 bytes of SHA-256(raw)."""
        return key_id_for(self.raw)

    @property
    def b64(self) -> str:
        """Standard base64 of the raw key, as written in ``federation.toml``."""
        return base64.b64encode(self.raw).decode()

    @classmethod
    def from_b64(cls, text: str) -> PublicIdentity:
        """Parse a base64 raw key (membership file) or a PEM public key."""
        text = text.strip()
        if text.startswith("-----BEGIN"):
            return cls.from_pem(text.encode())
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError as exc:
            raise ConfigError("public key is not valid base64") from exc
        return cls(raw)

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicIdentity:
        """Parse a PEM ``PUBLIC KEY`` block holding an Ed25519 key."""
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ConfigError("not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("public key is not Ed25519")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Return whether ``signature`` is a valid Ed25519 signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def to_pem(self) -> bytes:
        """Serialise as a PEM ``PUBLIC KEY`` block."""
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class Identity:
    """A private signing key. Its repr never shows the key material."""

    _key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> Identity:
        """Create a fresh random key pair."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def public(self) -> PublicIdentity:
        """The public half."""
        return PublicIdentity(
            self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    @property
    def key_id(self) -> str:
        """The key id of the public half."""
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (64-byte Ed25519 signature)."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Identity(key_id={self.key_id!r})"

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Load a PEM private key; refuses files readable by group or others."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read private key {path}: {exc.strerror}") from exc
        if os.name == "posix" and mode & 0o077:
            raise ConfigError(f"private key {path} is readable by others (mode {mode & 0o777:o}); chmod 600 it")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} does not hold an Ed25519 key")
        return cls(key)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``private.pem`` (mode 0600, created exclusively) and ``public.pem`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        private_path = directory / PRIVATE_KEY_FILE
        public_path = directory / PUBLIC_KEY_FILE
        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise ConfigError(f"{private_path} already exists; refusing to overwrite a key") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        public_path.write_bytes(self.public.to_pem())
        return private_path, public_path


def load_public_key(path: Path) -> PublicIdentity:
    """Read a public key file (PEM or base64 raw)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read public key {path}") from exc
    return PublicIdentity.from_b64(text)
