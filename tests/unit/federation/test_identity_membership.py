from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from federation.errors import ConfigError
from federation.identity import Identity, load_public_key
from federation.membership import EmbeddingSpec, GatewayEntry, Membership, SiloEntry, load_membership, save_membership
from federation.secrets import Secret

pytestmark = pytest.mark.unit
SPEC = EmbeddingSpec(model="m", dimension=4, fingerprint="sha256:abcdef01")


def test_keys_are_written_private_and_never_overwritten(tmp_path: Path) -> None:
    identity = Identity.generate()
    private, public = identity.save(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert Identity.load(private).key_id == identity.key_id == load_public_key(public).key_id
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        Identity.generate().save(tmp_path)


def test_a_world_readable_private_key_is_refused(tmp_path: Path) -> None:
    private, _ = Identity.generate().save(tmp_path)
    os.chmod(private, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Identity.load(private)


def test_membership_round_trip_and_lookup(tmp_path: Path) -> None:
    silo, gw = Identity.generate(), Identity.generate()
    membership = (
        Membership(name="fed", embedding=SPEC)
        .with_silo(SiloEntry(name="a", url="https://a.example:8443", public_key=silo.public.b64))
        .with_gateway(GatewayEntry(name="g", public_key=gw.public.b64))
    )
    path = tmp_path / "federation.toml"
    save_membership(path, membership)
    loaded = load_membership(path)
    assert loaded == membership
    assert loaded.silo("a").key_id == silo.key_id
    assert list(loaded.gateway_keys()) == [gw.key_id]
    with pytest.raises(ConfigError, match="not in federation"):
        loaded.silo("zzz")


def test_membership_rejects_duplicates_bad_keys_and_typos(tmp_path: Path) -> None:
    key = Identity.generate().public.b64
    with pytest.raises(ValueError, match="own public key"):
        Membership(
            name="f",
            embedding=SPEC,
            silos=(SiloEntry(name="a", url="http://a", public_key=key),),
            gateways=(GatewayEntry(name="g", public_key=key),),
        )
    with pytest.raises(ValueError, match="base64"):
        SiloEntry(name="a", url="http://a", public_key="not a key")
    path = tmp_path / "f.toml"
    path.write_text(
        'name = "f"\nnmae = "typo"\n[embedding]\nmodel = "m"\ndimension = 4\nfingerprint = "sha256:abcdef01"\n'
    )
    with pytest.raises(ConfigError, match="nmae"):
        load_membership(path)


def test_secret_never_shows_and_compares_by_value() -> None:
    secret = Secret("hunter2-token")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret!r}"
    assert secret.matches("hunter2-token") and not secret.matches("hunter3-token") and not secret.matches(None)
    assert secret == Secret("hunter2-token") and secret != Secret("other")
