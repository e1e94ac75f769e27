from __future__ import annotations

from pathlib import Path

import pytest

from federation.config import TrainRunSettings, load_train_settings
from federation.errors import ConfigError
from training.run_config import settings_from_config, settings_to_config

pytestmark = pytest.mark.unit


def test_a_run_file_resolves_paths_from_its_directory(tmp_path: Path) -> None:
    (tmp_path / "train.toml").write_text(
        'strategy = "flora"\nrounds = 2\noutput = "out"\n[deployment]\nsilos = [{ name = "a", dir = "silos/a" }]\n',
        encoding="utf-8",
    )
    settings = load_train_settings(tmp_path / "train.toml")
    assert settings.output == (tmp_path / "out").resolve()
    assert settings.deployment.silos[0].dir == (tmp_path / "silos" / "a").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rounds = 0\n", "rounds"),
        ("strategy = 'fedsgd'\n", "strategy"),
        ("[local]\nlerning_rate = 0.1\n", "lerning_rate"),
        ("strategy = 'flora'\n[client_dp]\nenabled = true\n", "client-level DP cannot wrap flora"),
        ("strategy = 'prompt-cluster'\n[secure_aggregation]\nenabled = true\n", "only sums"),
        ("rounds = [\n", "train.toml"),
    ],
)
def test_bad_run_files_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "train.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_train_settings(tmp_path / "train.toml")


def test_settings_travel_intact_and_garbage_is_refused() -> None:
    settings = TrainRunSettings(strategy="prompt-avg", rounds=7)
    settings.record_dp.enabled = True
    encoded = settings_to_config(settings)
    assert " " not in encoded and '"' not in encoded and "'" not in encoded  # safe in flwr's --run-config
    assert settings_from_config(encoded) == settings
    for bad in ("", "not base64!", "eyJ4IjogMX0=", 3):  # the last but one is {"x": 1}
        with pytest.raises(ConfigError):
            settings_from_config(bad)
