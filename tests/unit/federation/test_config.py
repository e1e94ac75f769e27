from __future__ import annotations

from pathlib import Path

import pytest

from federation.config import SiloSettings, load_silo_settings, write_silo_settings
from federation.errors import ConfigError

pytestmark = pytest.mark.unit
HASH = "0" * 64


def write(tmp_path: Path, **overrides: object) -> Path:
    settings = SiloSettings(
        name="s", federation_file=Path("f.toml"), key_file=Path("k.pem"), operator_token_sha256=HASH
    )
    write_silo_settings(tmp_path, settings)
    return tmp_path


def test_round_trip_resolves_paths_relative_to_the_silo(tmp_path: Path) -> None:
    settings = load_silo_settings(write(tmp_path))
    assert settings.federation_file == (tmp_path / "f.toml").resolve()
    assert settings.policy.max_k == 10


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDRAG_SILO_POLICY__MAX_K", "3")
    assert load_silo_settings(write(tmp_path)).policy.max_k == 3


def test_a_typo_in_the_file_is_an_error(tmp_path: Path) -> None:
    write(tmp_path)
    path = tmp_path / "silo.toml"
    path.write_text(path.read_text().replace("[policy]", "[policy]\nmax_kk = 4"))
    with pytest.raises(ConfigError, match="max_kk"):
        load_silo_settings(tmp_path)


def test_invalid_values_name_the_field(tmp_path: Path) -> None:
    write(tmp_path)
    path = tmp_path / "silo.toml"
    path.write_text(path.read_text().replace("overlap_chars = 150", "overlap_chars = 5000"))
    with pytest.raises(ConfigError, match="overlap_chars"):
        load_silo_settings(tmp_path)


def test_missing_config_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fedrag silo init"):
        load_silo_settings(tmp_path)


def crawl_section(tmp_path: Path, body: str) -> Path:
    write(tmp_path)
    path = tmp_path / "silo.toml"
    text = path.read_text()
    start = text.index("[policy.crawl]")
    end = text.index("\n[", start + 1)
    path.write_text(text[:start] + "[policy.crawl]\n" + body + text[end:])
    return tmp_path


def test_policy_crawl_parses_from_silo_toml(tmp_path: Path) -> None:
    default = load_silo_settings(write(tmp_path)).policy.crawl
    assert not default.enabled and default.controls == ["crawl_limit", "self_query", "sweep"]
    assert default.max_distinct_chunks == 500 and default.max_distinct_share == 0.02
    body = 'enabled = true\nwindow_s = 600.0\nmax_distinct_chunks = 40\ncontrols = ["crawl_limit", "sweep"]\n'
    crawl = load_silo_settings(crawl_section(tmp_path, body)).policy.crawl
    assert crawl.enabled and crawl.window_s == 600.0 and crawl.max_distinct_chunks == 40
    assert crawl.controls == ["crawl_limit", "sweep"] and crawl.max_self_queries == 20


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("max_distinct_chunks = -5\n", "policy.crawl.max_distinct_chunks"),
        ("max_distinct_share = 1.5\n", "policy.crawl.max_distinct_share"),
        ("max_self_queries = -1\n", "policy.crawl.max_self_queries"),
        ('controls = ["crawl_limit", "scrape"]\n', "policy.crawl.controls"),
        ("window_s = 0\n", "policy.crawl.window_s"),
        ("max_distinct = 5\n", "policy.crawl.max_distinct"),
    ],
)
def test_bad_crawl_values_are_clear_errors(tmp_path: Path, body: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_silo_settings(crawl_section(tmp_path, body))
