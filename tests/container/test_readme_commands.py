"""The container commands the README shows are the ones the container tests run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.container.commands import GATEWAY, README_HOST, SILO, readme_commands, render

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("step", [*(f"silo:{name}" for name in SILO), *(f"gateway:{name}" for name in GATEWAY)])
def test_the_readme_shows_each_command_the_container_test_runs(step: str) -> None:
    group, name = step.split(":")
    template = (SILO if group == "silo" else GATEWAY)[name]
    command = " ".join(render(template, README_HOST))
    assert command in readme_commands(README), f"README lacks the {step} command:\n  {command}"
