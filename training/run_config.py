"""The run's settings as they travel in Flower's run config and messages.

Flower's run config holds scalars only, and ``flwr run --run-config`` parses its values as
TOML, so the whole :class:`~federation.config.TrainRunSettings` travels as one base64 JSON
string under :data:`RUN_SETTINGS_KEY`: the server reads it from the run config and passes it
on to every silo in each round's config record, and every silo validates it again.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import ValidationError

from federation.config import TrainRunSettings
from federation.errors import ConfigError

RUN_SETTINGS_KEY = "fedrag-run"


def settings_to_config(settings: TrainRunSettings) -> str:
    """Encode settings for the run config (base64 of their JSON)."""
    return base64.b64encode(settings.model_dump_json().encode()).decode("ascii")


def settings_from_config(value: object) -> TrainRunSettings:
    """Decode and validate settings from the run config.

    Raises:
        ConfigError: missing, not base64 JSON, or not valid settings.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(f"the run config has no '{RUN_SETTINGS_KEY}': start runs with fedrag train run")
    try:
        return TrainRunSettings.model_validate_json(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, ValidationError) as exc:
        raise ConfigError(f"the run's '{RUN_SETTINGS_KEY}' settings are invalid: {exc}") from exc


__all__ = ["RUN_SETTINGS_KEY", "settings_from_config", "settings_to_config"]
