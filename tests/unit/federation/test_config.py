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
