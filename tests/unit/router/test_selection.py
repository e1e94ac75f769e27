"""The learned router's coverage selection, its calibration, share labels and model file versions."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from federation.errors import ConfigError
from gateway.router_training import train_router
from router import LearnedRouter, SiloView, TrainingExample, calibrate, evaluate_routing, make_router
from router.features import FEATURE_NAMES
from router.learned import covering
from tests.unit.router.synthetic import DIM, Federation, build_federation, make_card, unit

pytestmark = pytest.mark.unit

SHARES = (0.4, 0.25, 0.15, 0.1, 0.06, 0.04)  # silo0 .. silo5
CUMULATIVE = np.cumsum(SHARES)


@pytest.fixture(scope="module")
def federation() -> Federation:
    return build_federation()


@pytest.fixture(scope="module")
def mixed_train(federation: Federation) -> list[TrainingExample]:
    return federation.examples(300, seed=1, mixed=0.6)


@pytest.fixture(scope="module")
def mixed_test(federation: Federation) -> list[TrainingExample]:
    return federation.examples(300, seed=2, mixed=0.6)


def fixed_shares(coverage: float) -> LearnedRouter:
    """A share model that ignores the query: silo i always gets SHARES[i]."""
    n = len(FEATURE_NAMES)
    return LearnedRouter(
        intercept=0.0,
        weights=np.zeros(n),
        feature_mean=np.zeros(n),
        feature_std=np.ones(n),
        silo_names=[f"silo{i}" for i in range(len(SHARES))],
        silo_bias=np.log(SHARES),
        model="share",
        selection="coverage",
        coverage=coverage,
    )


def query(federation: Federation) -> np.ndarray:
    return unit(federation.centres[0])


@pytest.mark.parametrize("coverage", [1e-6, 0.3, 0.5, 0.7, 0.85, 0.93, 0.99, 1.0])
def test_coverage_asks_the_fewest_silos_reaching_the_target(federation: Federation, coverage: float) -> None:
    plan = fixed_shares(coverage).route(query(federation), federation.views)
    fewest = max(1, int(np.searchsorted(CUMULATIVE, coverage - 1e-12) + 1))
    assert plan.selected == [f"silo{i}" for i in range(min(fewest, len(SHARES)))]
    decisions = {d.silo: d for d in plan.decisions}
    for i, share in enumerate(SHARES):
        assert decisions[f"silo{i}"].score == pytest.approx(share)
    first = decisions["silo0"]
    assert first.reason == f"share 0.40, covering 0.40 (target {coverage:.2f})"
    for skipped in plan.skipped:
        assert skipped.reason.startswith(f"coverage {coverage:.2f} reached without it (share ")


def test_coverage_never_routes_nowhere_and_honours_the_budget(federation: Federation) -> None:
    router = fixed_shares(0.99)
    plan = router.route(query(federation), federation.views, max_silos=2)
    assert plan.selected == ["silo0", "silo1"]
    assert {d.reason for d in plan.skipped} == {"over budget (max 2 silos)"}
    assert router.with_coverage(1e-9).route(query(federation), federation.views).selected == ["silo0"]
    shuffled = [federation.views[i] for i in (3, 5, 0, 2, 4, 1)]
    assert router.route(query(federation), shuffled, max_silos=3).selected == ["silo0", "silo1", "silo2"]


def test_coverage_counts_only_healthy_silos(federation: Federation) -> None:
    views = list(federation.views)
    views[0] = replace(views[0], healthy=False, health_reason="circuit open after 3 failures")
    plan = fixed_shares(0.6).route(query(federation), views)
    # Healthy silos hold 0.6 together; 0.6 of that is 0.36: silo1 (0.25) and silo2 (0.15) reach it.
    assert plan.selected == ["silo1", "silo2"]
    by_name = {d.silo: d for d in plan.decisions}
    assert by_name["silo0"].reason == "circuit open after 3 failures" and not by_name["silo0"].selected
    assert by_name["silo0"].score == pytest.approx(0.4), "the score is still the share of the whole top-k"
    assert by_name["silo2"].reason == "share 0.15, covering 0.67 (target 0.60)"

    down = [replace(v, healthy=False, health_reason="down") for v in federation.views]
    assert fixed_shares(0.9).route(query(federation), down).selected == []
    no_card = [*down[:5], replace(federation.views[5], card=None)]
    plan = fixed_shares(0.9).route(query(federation), no_card)
    assert plan.selected == ["silo5"] and plan.decisions[0].reason == "no card yet; asked as fallback"
    empty = replace(federation.views[1], card=make_card("silo1", np.zeros((0, DIM)), 0))
    plan = fixed_shares(0.99).route(query(federation), [*federation.views[:1], empty, *federation.views[2:]])
    assert "silo1" not in plan.selected and len(plan.selected) == 5


def test_covering_function() -> None:
    ranked = [("a", 0.5), ("b", 0.3), ("c", 0.2)]
    assert covering(ranked, 0.5) == {"a": 0.5}
    assert covering(ranked, 0.51) == pytest.approx({"a": 0.5, "b": 0.8})
    assert list(covering(ranked, 1.0)) == ["a", "b", "c"]
    assert covering([("a", 0.0), ("b", 0.0)], 0.9) == {"a": 1.0}, "no mass at all: still one silo"
    assert covering([], 0.9) == {}


def test_share_labels_are_validated(federation: Federation) -> None:
    q, views = query(federation), federation.views
    with pytest.raises(ValueError, match="non-negative"):
        TrainingExample(q, views, frozenset({"silo0"}), {"silo0": 1.2, "silo1": -0.2})
    with pytest.raises(ValueError, match="non-negative"):
        TrainingExample(q, views, frozenset({"silo0"}), {"silo0": math.nan})
    with pytest.raises(ValueError, match="at most 1"):
        TrainingExample(q, views, frozenset({"silo0", "silo1"}), {"silo0": 0.7, "silo1": 0.7})
    with pytest.raises(ValueError, match="exactly the relevant"):
        TrainingExample(q, views, frozenset({"silo0", "silo1"}), {"silo0": 1.0})
    example = TrainingExample(q, views, frozenset({"silo0", "silo1"}), {"silo0": 0.9, "silo1": 0.1, "silo2": 0.0})
    assert example.share_map() == {"silo0": 0.9, "silo1": 0.1}
    assert TrainingExample(q, views, frozenset({"silo0", "silo3"})).share_map() == {"silo0": 0.5, "silo3": 0.5}


def test_calibrated_coverage_keeps_the_target_recall_with_fewer_calls(
    mixed_train: list[TrainingExample], mixed_test: list[TrainingExample]
) -> None:
    model = LearnedRouter.train(mixed_train)
    previous = None
    for target in (0.9, 0.95, 0.99):
        found = calibrate(mixed_train, target_recall=target)
        assert found.selection == "coverage" and found.recall >= target and found.folds == 5
        if previous is not None:
            assert found.value >= previous.value and found.fraction_asked >= previous.fraction_asked
        previous = found
        figures = evaluate_routing(model.with_coverage(found.value), mixed_test)
        assert figures["recall"] >= target - 0.05, (target, found, figures)
        assert abs(figures["fraction_asked"] - found.fraction_asked) < 0.05, "out-of-fold cost predicts test cost"
    assert evaluate_routing(model.with_coverage(1.0), mixed_test)["fraction_asked"] == 1.0, "every share is positive"
    assert previous is not None and previous.fraction_asked < 0.3, "recall 0.99 for under a third of the calls"


@pytest.mark.parametrize(("model", "selection"), [("share", "threshold"), ("relevance", "threshold")])
def test_calibrated_threshold(model: str, selection: str, mixed_train: list[TrainingExample]) -> None:
    found = calibrate(mixed_train, target_recall=0.95, model=model, selection=selection)  # type: ignore[arg-type]
    assert found.selection == "threshold" and 0.0 < found.value < 1.0 and found.recall >= 0.95
    assert set(found.record()) == {"target_recall", "cv_recall", "cv_fraction_asked", "folds"}


def test_calibrate_validates(mixed_train: list[TrainingExample]) -> None:
    with pytest.raises(ValueError, match="folds"):
        calibrate(mixed_train, folds=1)
    with pytest.raises(ValueError, match="folds"):
        calibrate(mixed_train[:3], folds=4)
    with pytest.raises(ValueError, match="coverage"):
        calibrate(mixed_train, target_recall=0.0)
    with pytest.raises(ValueError, match="share model"):
        calibrate(mixed_train, model="relevance", selection="coverage")


def test_train_router_calibrates_unless_given(mixed_train: list[TrainingExample], tmp_path: Path) -> None:
    router, found = train_router(mixed_train[:100])
    assert found is not None and router.selection == "coverage" and router.coverage == found.value
    assert router.calibration == found.record()
    router.save(tmp_path / "router.json")
    assert LearnedRouter.load(tmp_path / "router.json").calibration == found.record()
    given, none = train_router(mixed_train[:100], coverage=0.8)
    assert none is None and (given.selection, given.coverage, given.calibration) == ("coverage", 0.8, {})
    relevance, found = train_router(mixed_train[:100], model="relevance", selection="threshold")
    assert found is not None and relevance.model == "relevance" and relevance.threshold == found.value
    with pytest.raises(ValueError, match="at least 4"):
        train_router(mixed_train[:3])
    with pytest.raises(ValueError, match="threshold needs that selection"):
        train_router(mixed_train[:100], threshold=0.2)


def test_version_1_model_files_still_load(
    federation: Federation, mixed_train: list[TrainingExample], tmp_path: Path
) -> None:
    relevance = LearnedRouter.train(mixed_train, model="relevance", threshold=0.4)
    relevance.save(tmp_path / "v2.json")
    data = json.loads((tmp_path / "v2.json").read_text())
    for key in ("model", "selection", "coverage", "calibration"):
        del data[key]
    (tmp_path / "v1.json").write_text(json.dumps({**data, "version": 1}))
    old = LearnedRouter.load(tmp_path / "v1.json")
    assert (old.model, old.selection, old.threshold) == ("relevance", "threshold", 0.4)
    for example in mixed_train[:20]:
        assert old.route(example.query, example.silos) == relevance.route(example.query, example.silos)
    with pytest.raises(ConfigError, match="coverage selection needs a share model"):
        make_router("learned", model_path=tmp_path / "v1.json", coverage=0.9)
    (tmp_path / "v3.json").write_text(json.dumps({**data, "version": 3}))
    with pytest.raises(ConfigError, match=r"unsupported model version 3 \(this build reads versions 1, 2\); retrain"):
        LearnedRouter.load(tmp_path / "v3.json")


def test_unseen_silo_gets_a_share(federation: Federation, mixed_train: list[TrainingExample]) -> None:
    model = LearnedRouter.train(mixed_train)
    rng = np.random.default_rng(11)
    topic = unit(rng.normal(size=DIM))
    newcomer = SiloView(name="newcomer", card=make_card("newcomer", topic, 80))
    scores = model.scores(topic, [*federation.views, newcomer])
    assert sum(scores.values()) == pytest.approx(1.0)
    assert max(scores, key=lambda name: scores[name]) == "newcomer"


def test_calibration_can_hold_out_each_kind_of_question(mixed_train: list[TrainingExample]) -> None:
    # Two kinds that differ in topic: the questions silo0 answers, and the rest.
    kinds = ["silo0" if "silo0" in e.relevant else "other" for e in mixed_train]
    assert 10 < kinds.count("silo0") < len(kinds) - 10
    by_kind = calibrate(mixed_train, target_recall=0.95, groups=kinds)
    assert by_kind.folds == 2 and by_kind.recall >= 0.95 and by_kind.record()["folds"] == 2
    with pytest.raises(ValueError, match="groups"):
        calibrate(mixed_train, groups=kinds[:-1])
    assert calibrate(mixed_train, groups=["one"] * len(mixed_train)).folds == 5  # one kind: random folds


def test_train_router_passes_the_kinds_to_its_calibration(mixed_train: list[TrainingExample]) -> None:
    kinds = ["supplied" if i % 3 else "drawn" for i in range(100)]
    router, found = train_router(mixed_train[:100], groups=kinds)
    assert found is not None and found.folds == 2 and router.calibration["folds"] == 2
