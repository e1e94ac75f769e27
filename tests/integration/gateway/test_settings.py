"""``fedrag gateway serve`` honours every setting: defaults < ``FEDRAG_GATEWAY_*`` variables < flags."""

from __future__ import annotations

import httpx
import pytest

from federation.errors import ConfigError
from federation.services import fedrag_service, free_port
from gateway.apikeys import ApiKeyStore
from gateway.cli import settings_with_flags
from tests.conftest import Federation

pytestmark = pytest.mark.integration

DOCUMENTED = {  # the README's examples, each with the value a test can see
    "FEDRAG_GATEWAY_RETRIEVAL__K": "10",
    "FEDRAG_GATEWAY_RETRIEVAL__K_PER_SILO": "10",
    "FEDRAG_GATEWAY_RETRIEVAL__ROUTER_COVERAGE": "0.9",
    "FEDRAG_GATEWAY_RETRIEVAL__ROUTER": "all",
    "FEDRAG_GATEWAY_RETRIEVAL__DEADLINE_S": "4.5",
    "FEDRAG_GATEWAY_RATE_LIMIT_PER_MINUTE": "7",
    "FEDRAG_GATEWAY_LLM__PARALLEL": "3",
    "FEDRAG_GATEWAY_CONVERSATION__CONDENSE": "history",
}


def test_variables_are_honoured_and_flags_override_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DOCUMENTED.items():
        monkeypatch.setenv(name, value)
    required = {"federation_file": "f.toml", "key_file": "k.pem"}
    settings = settings_with_flags(required, {"retrieval": {"k": None, "router": None}, "llm": {"model": None}})
    assert (settings.retrieval.k, settings.retrieval.k_per_silo, settings.retrieval.router_coverage) == (10, 10, 0.9)
    assert settings.retrieval.router == "all" and settings.retrieval.deadline_s == 4.5
    assert settings.rate_limit_per_minute == 7 and settings.llm.parallel == 3
    assert settings.conversation.condense == "history"
    flagged = settings_with_flags(required, {"retrieval": {"k": 3, "max_silos": 2}, "rate_limit_per_minute": 9})
    assert flagged.retrieval.k == 3 and flagged.retrieval.k_per_silo == 10  # the flag wins; the rest stays
    assert flagged.retrieval.silo_budget() == 2 and flagged.rate_limit_per_minute == 9


def test_a_settings_file_is_read_under_the_variables_and_the_flags(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('rate_limit_per_minute = 5\n[retrieval]\nk = 4\nrouter = "learned"\ndeadline_s = 9\n')
    monkeypatch.setenv("FEDRAG_GATEWAY_RETRIEVAL__ROUTER", "all")
    required = {"federation_file": "f.toml", "key_file": "k.pem"}
    settings = settings_with_flags(required, {"retrieval": {"deadline_s": 2.0}}, config)
    assert settings.rate_limit_per_minute == 5 and settings.retrieval.k == 4  # from the file
    assert settings.retrieval.router == "all"  # the variable over the file
    assert settings.retrieval.deadline_s == 2.0  # the flag over both
    config.write_text("[retrieval]\nkk = 4\n")
    with pytest.raises(ConfigError, match="kk"):
        settings_with_flags(required, {}, config)
    config.write_text("not toml [")
    with pytest.raises(ConfigError, match=r"gateway\.toml"):
        settings_with_flags(required, {}, config)


def test_the_real_cli_serves_with_the_environments_settings(federation: Federation, tmp_path) -> None:
    keys = tmp_path / "api-keys.json"
    key = ApiKeyStore.add(keys, "settings-test")
    port = free_port()
    args = [
        "gateway", "serve", "--federation", str(federation.file),
        "--key", str(federation.root / "keys/gateway/private.pem"), "--api-keys", str(keys),
        "--port", str(port), "--llm-url", f"http://127.0.0.1:{free_port()}",
        "--deadline", "2.5", "--log-level", "warning",
    ]  # fmt: skip
    env = {**DOCUMENTED, "FEDRAG_GATEWAY_RETRIEVAL__MAX_SILOS": "1"}
    url = f"http://127.0.0.1:{port}"
    with fedrag_service(args, f"{url}/readyz", env=env, log=tmp_path / "gateway.log", what="gateway"):
        headers = {"Authorization": f"Bearer {key}"}
        silos = httpx.get(f"{url}/v1/silos", headers=headers, timeout=30).json()
        # From the environment: the router and the budget; from the flag, over the variable: the deadline.
        assert (silos["router"], silos["max_silos"], silos["deadline_s"]) == ("all", 1, 2.5)
        statuses = [httpx.get(f"{url}/v1/models", headers=headers, timeout=30).status_code for _ in range(8)]
        # 7 requests a minute (FEDRAG_GATEWAY_RATE_LIMIT_PER_MINUTE): /v1/silos and 6 more, then 429.
        assert statuses == [200] * 6 + [429] * 2
