"""Request signing and verification: a subset of HTTP Message Signatures (RFC 9421).

A signed request carries four headers::

    Content-Digest: sha-256=:<base64 sha-256 of the body>:                     (RFC 9530)
    Fedrag-Audience: <name of the silo the request is meant for>
    Signature-Input: fedrag=("@method" "@path" "@query" "content-digest" "fedrag-audience");\
created=<unix s>;nonce="<random>";keyid="<key id>";alg="ed25519"
    Signature: fedrag=:<base64 Ed25519 signature of the signature base>:

The signature base is built as in RFC 9421 section 2.5 from exactly those components.
The verifier rejects, with 401 and a stable code: a missing or malformed signature, an
algorithm other than Ed25519, an unknown key or a key of a party that may not call, a
``created`` outside the clock-skew window, a body whose digest does not match, a bad
signature (tampered method, path, query or audience), a request meant for another silo,
and a nonce seen before (replay). Nonces are remembered only after the signature checks
out, so an attacker cannot fill the cache.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from federation.errors import AuthenticationFailed, Unavailable
from federation.identity import Identity, PublicIdentity

LABEL = "fedrag"
ALGORITHM = "ed25519"
AUDIENCE_HEADER = "fedrag-audience"
COVERED_COMPONENTS = ("@method", "@path", "@query", "content-digest", AUDIENCE_HEADER)

_INPUT_RE = re.compile(r'^fedrag=\((?P<components>[^()]*)\)(?P<params>(;[a-z]+=("[^"\\]*"|[0-9]+))*)$')
_PARAM_RE = re.compile(r';([a-z]+)=("[^"\\]*"|[0-9]+)')
_SIGNATURE_RE = re.compile(r"^fedrag=:(?P<sig>[A-Za-z0-9+/]+={0,2}):$")
_DIGEST_RE = re.compile(r"(?:^|,)\s*sha-256=:(?P<digest>[A-Za-z0-9+/]+={0,2}):")
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_AUDIENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def content_digest(body: bytes) -> str:
    """Return the RFC 9530 ``Content-Digest`` value (sha-256) of ``body``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


_COMPONENTS = "(" + " ".join(f'"{c}"' for c in COVERED_COMPONENTS) + ")"


def _signature_params(created: int, nonce: str, key_id: str) -> str:
    return f'{_COMPONENTS};created={created};nonce="{nonce}";keyid="{key_id}";alg="{ALGORITHM}"'


def signature_base(method: str, path: str, query: str, digest: str, audience: str, params: str) -> bytes:
    """Build the RFC 9421 signature base over the covered components.

    Args:
        method: HTTP method, upper case.
        path: the request target's path, as sent.
        query: the query string without ``?`` (empty when none).
        digest: the ``Content-Digest`` header value.
        audience: the ``Fedrag-Audience`` header value.
        params: the serialised signature parameters (the inner list and its parameters).
    """
    lines = [
        f'"@method": {method.upper()}',
        f'"@path": {path or "/"}',
        f'"@query": ?{query}',
        f'"content-digest": {digest}',
        f'"{AUDIENCE_HEADER}": {audience}',
        f'"@signature-params": {params}',
    ]
    return "\n".join(lines).encode()


class RequestSigner:
    """Signs outgoing requests with a party's identity."""

    def __init__(self, identity: Identity, *, clock: Callable[[], float] = time.time) -> None:
        self._identity = identity
        self._key_id = identity.key_id  # derived from the public key: computed once, not per request
        self._clock = clock

    @property
    def key_id(self) -> str:
        """The key id requests are signed with."""
        return self._key_id

    def sign(self, method: str, path: str, query: str, body: bytes, audience: str) -> dict[str, str]:
        """Return the headers that sign this request for ``audience``."""
        return self.sign_digest(method, path, query, content_digest(body), audience)

    def sign_digest(self, method: str, path: str, query: str, digest: str, audience: str) -> dict[str, str]:
        """Like :meth:`sign`, for a body whose ``Content-Digest`` is already known.

        The gateway sends one body to many silos: it hashes the body once and signs it once
        per silo (each signature has its own audience, nonce and time). ``digest`` must be
        :func:`content_digest` of the body sent; the silo recomputes it and refuses a mismatch.
        """
        params = _signature_params(int(self._clock()), secrets.token_urlsafe(24), self._key_id)
        base = signature_base(method, path, query, digest, audience, params)
        signature = base64.b64encode(self._identity.sign(base)).decode()
        return {
            "Content-Digest": digest,
            "Fedrag-Audience": audience,
            "Signature-Input": f"{LABEL}={params}",
            "Signature": f"{LABEL}=:{signature}:",
        }

    def __repr__(self) -> str:
        return f"RequestSigner(key_id={self.key_id!r})"


class NonceCache(Protocol):
    """Where a verifier remembers the nonces it accepted (the replay cache).

    :meth:`remember` records (key id, nonce) for at least the clock-skew window and says
    whether it was new; when it cannot tell (its store is down) it raises
    :class:`~federation.errors.Unavailable`, and the request is refused. :attr:`started_at` is
    the earliest ``created`` time the cache vouches for: a signature made before it may carry a
    nonce the cache has forgotten, and is refused. :attr:`remote` is true when :meth:`remember`
    makes a network round trip (a caller on an event loop then verifies in a worker thread).
    Implementations: :class:`ReplayCache` (one process) and
    :class:`federation.redis_state.RedisReplayCache` (shared by a silo's workers).
    """

    @property
    def started_at(self) -> float:
        """Signatures created before this time (seconds since the epoch) are refused."""
        ...

    @property
    def remote(self) -> bool:
        """Whether :meth:`remember` waits on the network."""
        ...

    def remember(self, key_id: str, nonce: str) -> bool:
        """Record the nonce; return False if it was already seen (a replay)."""
        ...


class ReplayCache:
    """Remembers (key id, nonce) pairs until they could no longer pass the clock-skew window.

    Bounded: when full of nonces that are all still live, new requests are refused with
    503 rather than forgetting a live nonce (which would open a replay window). It lives in
    memory, so it also records when it started: signatures created before then are refused,
    since the nonces they carry may have been used before a restart.
    """

    remote = False

    def __init__(self, ttl_s: float, max_entries: int, *, clock: Callable[[], float] = time.time) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.started_at = math.floor(clock())

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, key_id: str, nonce: str) -> bool:
        """Record the nonce; return False if it was already seen (a replay)."""
        now = self._clock()
        key = (key_id, nonce)
        with self._lock:
            while self._seen:
                oldest_key, expires = next(iter(self._seen.items()))
                if expires > now:
                    break
                del self._seen[oldest_key]
            if key in self._seen:
                return False
            if len(self._seen) >= self._max:
                raise Unavailable(
                    "too many requests in flight for the replay cache; retry shortly", code="replay_cache_full"
                )
            self._seen[key] = now + self._ttl
            return True


@dataclass(frozen=True)
class Caller:
    """Who sent a verified request."""

    key_id: str
    name: str


class RequestVerifier:
    """Verifies signed requests addressed to one audience (a silo) from a set of trusted keys."""

    def __init__(
        self,
        trusted: Mapping[str, tuple[str, PublicIdentity]],
        audience: str,
        *,
        known_but_not_allowed: Mapping[str, str] | None = None,
        clock_skew_s: float = 30.0,
        replay_cache: NonceCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a verifier.

        Args:
            trusted: key id -> (party name, public key) of the parties allowed to call.
            audience: the name requests must be addressed to.
            known_but_not_allowed: key id -> reason, for members that may not call (silos).
            clock_skew_s: accepted distance between ``created`` and now, both directions.
            replay_cache: the nonce cache (:class:`NonceCache`); a private in-memory one when omitted.
            clock: time source (seconds since the epoch).
        """
        self._trusted = dict(trusted)
        self._audience = audience
        self._not_allowed = dict(known_but_not_allowed or {})
        self._skew = clock_skew_s
        self._clock = clock
        self._replay: NonceCache = replay_cache or ReplayCache(2 * clock_skew_s + 1, 100_000, clock=clock)

    @property
    def remote(self) -> bool:
        """Whether :meth:`verify` waits on the network (a shared replay cache): run it off the event loop."""
        return self._replay.remote

    def verify(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Caller:
        """Check a request; return the caller or raise :class:`AuthenticationFailed` with a reason.

        Args:
            method: HTTP method.
            path: raw request path.
            query: raw query string without ``?``.
            headers: request headers (case-insensitive mapping or lower-case keys).
            body: the exact body bytes received.
        """
        sig_input = _header(headers, "signature-input")
        sig_header = _header(headers, "signature")
        if sig_input is None or sig_header is None:
            raise AuthenticationFailed(
                "request is not signed (Signature and Signature-Input required)", code="signature_missing"
            )
        match = _INPUT_RE.match(sig_input.strip())
        sig_match = _SIGNATURE_RE.match(sig_header.strip())
        if match is None or sig_match is None:
            raise AuthenticationFailed("malformed Signature or Signature-Input header", code="signature_malformed")
        components = tuple(c.strip('"') for c in match.group("components").split())
        if components != COVERED_COMPONENTS:
            raise AuthenticationFailed(
                "signature must cover " + " ".join(COVERED_COMPONENTS), code="signature_malformed"
            )
        params = {name: value.strip('"') for name, value in _PARAM_RE.findall(match.group("params"))}
        if params.get("alg") != ALGORITHM:
            raise AuthenticationFailed("signature algorithm must be ed25519", code="signature_malformed")
        try:
            created = int(params["created"])
            nonce = params["nonce"]
            key_id = params["keyid"]
        except (KeyError, ValueError) as exc:
            raise AuthenticationFailed(
                "signature parameters created, nonce and keyid are required", code="signature_malformed"
            ) from exc
        if not _NONCE_RE.match(nonce):
            raise AuthenticationFailed("nonce must be 16-128 url-safe characters", code="signature_malformed")
        now = self._clock()
        if created < now - self._skew:
            raise AuthenticationFailed(
                f"signature expired (created {now - created:.0f}s ago)", code="signature_expired"
            )
        if created > now + self._skew:
            raise AuthenticationFailed(
                f"signature created {created - now:.0f}s in the future", code="signature_from_future"
            )
        if created < self._replay.started_at:
            raise AuthenticationFailed(
                "signature created before this silo (re)started; sign the request again", code="signature_expired"
            )
        if key_id in self._not_allowed:
            raise AuthenticationFailed(self._not_allowed[key_id], code="key_not_allowed")
        party = self._trusted.get(key_id)
        if party is None:
            raise AuthenticationFailed("unknown key id: not a member of this federation", code="key_unknown")
        digest_header = _header(headers, "content-digest") or ""
        digest_match = _DIGEST_RE.search(digest_header)
        expected = hashlib.sha256(body).digest()
        try:
            claimed = base64.b64decode(digest_match.group("digest"), validate=True) if digest_match else b""
        except ValueError:
            claimed = b""
        if not hmac.compare_digest(claimed, expected):
            raise AuthenticationFailed("Content-Digest does not match the body", code="digest_mismatch")
        audience = _header(headers, AUDIENCE_HEADER) or ""
        if not _AUDIENCE_RE.match(audience):
            raise AuthenticationFailed("Fedrag-Audience header missing or malformed", code="signature_malformed")
        base = signature_base(method, path, query, digest_header, audience, _signature_params(created, nonce, key_id))
        try:
            signature = base64.b64decode(sig_match.group("sig"), validate=True)
        except ValueError as exc:
            raise AuthenticationFailed("signature is not valid base64", code="signature_malformed") from exc
        name, public = party
        if not public.verify(signature, base):
            raise AuthenticationFailed("signature does not match the request", code="signature_invalid")
        if not hmac.compare_digest(audience.encode(), self._audience.encode()):
            raise AuthenticationFailed(
                f"request is addressed to '{audience}', not to this silo", code="audience_mismatch"
            )
        if not self._replay.remember(key_id, nonce):
            raise AuthenticationFailed("nonce already used (replayed request)", code="nonce_replayed")
        if created < self._replay.started_at:  # a shared cache may learn of a restart only now
            raise AuthenticationFailed(
                "signature created before this silo's replay cache (re)started; sign the request again",
                code="signature_expired",
            )
        return Caller(key_id=key_id, name=name)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value
