"""A small federation whose silos take part in training: three packaged corpora, 40 documents each."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.config import load_silo_settings, write_silo_settings
from federation.encoder import SentenceTransformerEncoder

TRAINING_SILOS = ("cl", "hpo", "mondo")


def allow_training(silo_dir: Path, *, require_record_dp: bool = False, max_epsilon: float = 8.0) -> None:
    """Let a silo take part in training (its silo.toml, as an operator would edit it)."""
    raw = (silo_dir / "silo.toml").read_text(encoding="utf-8")
    settings = load_silo_settings(silo_dir)
    settings.policy.training.allowed = True
    settings.policy.training.require_record_dp = require_record_dp
    settings.policy.training.max_epsilon = max_epsilon
    settings.federation_file = Path("../../federation.toml")
    settings.key_file = Path(f"../../keys/{settings.name}/private.pem")
    assert "federation.toml" in raw
    write_silo_settings(silo_dir, settings)


@pytest.fixture(scope="session")
def training_federation(tmp_path_factory: pytest.TempPathFactory, encoder: SentenceTransformerEncoder) -> Path:
    """The federation's root; silos under silos/<name>, each allowing training without record-level DP."""
    from eval.builder import build_federation
    from silo_node.corpora import load_corpus

    root = tmp_path_factory.mktemp("training-fed") / "fed"
    built = build_federation(root, {name: load_corpus(name, limit=40) for name in TRAINING_SILOS}, encoder)
    for name in TRAINING_SILOS:
        allow_training(built.silo_dir(name))
    return root
