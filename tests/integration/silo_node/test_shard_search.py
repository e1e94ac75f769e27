"""Shard-restricted search through the real app: what a DP answer's voters read."""

from __future__ import annotations

import tomllib

import httpx
import pytest
import tomli_w

from federation.client import EncodedSearch, SiloClient
from federation.protocol import Shard, shard_of
from tests.conftest import Federation

pytestmark = pytest.mark.integration

SHARDS = 3


async def _search(
    fed: Federation, encoder, question: str, k: int, shard: Shard | None, exclude: list[str] | None = None
) -> list[tuple[str, str]]:
    from silo_node.app import create_app

    app = create_app(fed.silo_dir(), encoder=encoder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with SiloClient("http://alpha", "alpha", fed.signer(), transport=transport) as client:
            vector = encoder.encode([question])[0]
            fingerprint = fed.membership.embedding.fingerprint
            if exclude:
                search = EncodedSearch.build(vector, k, fingerprint, shard=shard, exclude_doc_ids=exclude)
                reply = (await client.search_encoded(search)).response
            else:
                reply = await client.search(vector, k, fingerprint, shard=shard)
    return [(hit.doc_id, hit.chunk_id) for hit in reply.hits]


async def test_each_shard_returns_its_own_top_k_and_together_they_cover_the_silo(federation, encoder) -> None:
    path = federation.silo_dir() / "silo.toml"
    config = tomllib.loads(path.read_text())
    config["policy"]["max_k"] = 100  # the unrestricted ranking, deep enough to find each shard's top 3 in it
    path.write_text(tomli_w.dumps(config))
    question = "how is asthma treated"
    everything = await _search(federation, encoder, question, 40, None)
    seen: set[str] = set()
    for index in range(SHARDS):
        hits = await _search(federation, encoder, question, 3, Shard(count=SHARDS, index=index))
        assert len(hits) == 3
        assert {shard_of("alpha", doc, SHARDS) for doc, _ in hits} == {index}
        # the shard's exact top 3: the first three of its documents in the unrestricted ranking
        assert [c for _, c in hits] == [c for d, c in everything if shard_of("alpha", d, SHARDS) == index][:3]
        seen |= {c for _, c in hits}
    assert len(seen) == 3 * SHARDS  # disjoint


async def test_deleting_a_document_changes_only_its_own_shard(federation, encoder) -> None:
    from federation.config import load_silo_settings
    from silo_node.service import SiloService

    question = "asthma inhaler"
    before = {i: await _search(federation, encoder, question, 3, Shard(count=SHARDS, index=i)) for i in range(SHARDS)}
    victim = before[0][0][0]  # the best document of shard 0
    service = SiloService(load_silo_settings(federation.silo_dir()), federation.silo_dir(), encoder=encoder).open()
    try:
        service.delete(victim)
    finally:
        service.close()
    after = {i: await _search(federation, encoder, question, 3, Shard(count=SHARDS, index=i)) for i in range(SHARDS)}
    assert victim not in {d for d, _ in after[0]}
    assert after[1] == before[1] and after[2] == before[2]


def test_a_shard_outside_its_count_is_refused() -> None:
    with pytest.raises(ValueError, match="below the count"):
        Shard(count=2, index=2)
    assert shard_of("alpha", "doc", 4) == shard_of("alpha", "doc", 4)  # stable across calls and parties


async def test_excluded_documents_are_searched_as_if_absent(federation, encoder) -> None:
    before = await _search(federation, encoder, "asthma inhaler", 8, None)
    left_out = [before[0][0]]
    after = await _search(federation, encoder, "asthma inhaler", 5, None, exclude=left_out)
    assert left_out[0] not in {d for d, _ in after} and len(after) == 5
    assert after == [h for h in before if h[0] != left_out[0]][:5]  # the others keep their order
