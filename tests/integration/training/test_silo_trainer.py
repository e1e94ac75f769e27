"""One silo's round with the real model: the silo's policy, record-level DP-SGD, FFA-LoRA's frozen A."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from aggregation.adapters import ffa_lora_a, lora_module
from federation.config import TrainRunSettings
from federation.errors import BudgetExhausted, Forbidden
from tests.integration.training.conftest import allow_training
from training.silo_trainer import SiloTrainer, adapter_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _tiny(strategy: str = "ffa-lora") -> TrainRunSettings:
    settings = TrainRunSettings(strategy=strategy)  # type: ignore[arg-type]
    settings.local.max_examples = 8
    settings.local.max_steps = 1
    settings.local.batch_size = 2
    settings.local.sources = 1
    return settings


@pytest.fixture
def silo(training_federation: Path, tmp_path: Path) -> Path:
    root = tmp_path / "fed"
    shutil.copytree(training_federation, root)
    return root / "silos" / "hpo"


def test_a_silo_that_requires_dp_sgd_refuses_a_run_without_it(silo: Path) -> None:
    allow_training(silo, require_record_dp=True)
    trainer = SiloTrainer(silo)
    try:
        with pytest.raises(Forbidden, match="record-level DP"):
            trainer.train(_tiny(), {}, run_id="r", round_=1)
    finally:
        trainer.close()
    assert not (silo / "training" / "ledger.jsonl").exists()


def test_dp_sgd_epsilon_accumulates_over_rounds_and_the_silos_limit_stops_training(silo: Path) -> None:
    allow_training(silo, require_record_dp=True, max_epsilon=30.0)
    settings = _tiny()
    settings.record_dp.enabled = True
    settings.record_dp.noise_multiplier = 1.0
    trainer = SiloTrainer(silo)
    try:
        first = trainer.train(settings, {}, run_id="run-a", round_=1)
        second = trainer.train(settings, first.arrays, run_id="run-a", round_=2)
        assert first.result.epsilon is not None and second.result.epsilon is not None
        assert 0 < first.result.epsilon < second.result.epsilon <= 30.0
        assert trainer.ledger.steps("run-a") == 2
        allow_training(silo, require_record_dp=True, max_epsilon=first.result.epsilon)  # the operator tightens it
        strict = SiloTrainer(silo)
        try:
            with pytest.raises(BudgetExhausted, match="over the silo's limit"):
                strict.train(settings, second.arrays, run_id="run-a", round_=3)
        finally:
            strict.close()
        assert trainer.ledger.steps("run-a") == 2  # the refused round spent nothing
    finally:
        trainer.close()


def test_ffa_lora_sends_only_b_and_every_party_derives_the_same_frozen_a(silo: Path) -> None:
    allow_training(silo)
    settings = _tiny("ffa-lora")
    trainer = SiloTrainer(silo)
    try:
        outcome = trainer.train(settings, {}, run_id="r", round_=1)
        model = trainer._model(settings, outcome.arrays, 1)
    finally:
        trainer.close()
    assert outcome.arrays and all(".lora_B." in name for name in outcome.arrays)
    assert any(np.abs(v).max() > 0 for v in outcome.arrays.values())  # B moved away from zero
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(model.model)
    a_names = [n for n in state if ".lora_A." in n]
    assert a_names
    seed = adapter_spec(settings).seed
    for name in a_names:
        a = state[name].detach().numpy()
        assert np.array_equal(a, ffa_lora_a(lora_module(name), a.shape, seed))
    assert not any(p.requires_grad for n, p in model.model.named_parameters() if "lora_A" in n)


def test_the_citation_weight_falls_on_the_cited_numbers_of_the_reply_only(silo: Path) -> None:
    from training.silo_trainer import load_silo_examples

    allow_training(silo)
    settings = _tiny("ffa-lora")
    trainer = SiloTrainer(silo)
    try:
        model = trainer._model(settings, {}, 1)
        examples = load_silo_examples(silo, settings, trainer.corpus).train[:2]
        weighted = model.encode(examples, 768, citation_weight=5.0)
        plain = model.encode(examples, 768)
        for example, item in zip(examples, weighted, strict=True):
            assert item.weights is not None
            pairs = zip(item.input_ids, item.weights, strict=True)
            heavy = [model.tokenizer.decode([t]).strip() for t, w in pairs if w == 5.0]
            # "Source [n]" in the reasoning, "[n]" after the answer, and the citations list.
            assert len(heavy) >= 3 and set(heavy) == {str(example.gold)}
            assert all(
                w == 0.0 for w, label in zip(item.weights, item.labels, strict=True) if label == -100
            )  # not the prompt
        assert all(item.weights is None for item in plain)
        losses = model._per_example_loss(model.model, weighted), model._per_example_loss(model.model, plain)
        assert not np.allclose(losses[0].detach().numpy(), losses[1].detach().numpy())
    finally:
        trainer.close()
