"""Routers on a seeded synthetic federation: contract, quality figures, model files.

The learned router is tested in three forms: the default (share model, coverage
selection), the share model with threshold selection, and the relevance model.
"""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from federation.errors import ConfigError
from router import (
    ROUTER_NAMES,
    AllRouter,
    CentroidRouter,
    LearnedRouter,
    Router,
    RoutingPlan,
    SiloView,
    TrainingExample,
    evaluate_routing,
    make_router,
)
from tests.unit.router.synthetic import DIM, QUERY_SPREAD, Federation, build_federation, make_card, unit

pytestmark = pytest.mark.unit

ROUTER_DIR = Path(__file__).resolve().parents[3] / "router"


@pytest.fixture(scope="module")
def federation() -> Federation:
    return build_federation()


@pytest.fixture(scope="module")
def train_examples(federation: Federation) -> list[TrainingExample]:
    return federation.examples(300, seed=1)


@pytest.fixture(scope="module")
def test_examples(federation: Federation) -> list[TrainingExample]:
    return federation.examples(300, seed=2)


@pytest.fixture(scope="module")
def learned(train_examples: list[TrainingExample]) -> LearnedRouter:
    return LearnedRouter.train(train_examples)


@pytest.fixture(scope="module")
def relevance(train_examples: list[TrainingExample]) -> LearnedRouter:
    return LearnedRouter.train(train_examples, model="relevance")


@pytest.fixture(scope="module")
def model_file(learned: LearnedRouter, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("router") / "router.json"
    learned.save(path)
    return path


STRATEGIES: dict[str, Callable[[LearnedRouter, LearnedRouter], Router]] = {
    "all": lambda share, relevance: AllRouter(),
    "centroid": lambda share, relevance: CentroidRouter(),
    "learned": lambda share, relevance: share,
    "learned-share-threshold": lambda share, relevance: share.with_threshold(0.1),
    "learned-relevance": lambda share, relevance: relevance,
    "learned-guard": lambda share, relevance: share.with_guard(),
}


def _scenario(federation: Federation, rng: np.random.Generator) -> list[SiloView]:
    """The federation's silos, some unhealthy, some without a card, one possibly empty."""
    views = []
    for view in federation.views:
        roll = rng.random()
        if roll < 0.3:
            view = replace(view, healthy=False, health_reason=f"circuit open after {rng.integers(3, 9)} failures")
        elif roll < 0.4:
            view = replace(view, card=None)
        elif roll < 0.45:
            view = replace(view, card=make_card(view.name, np.zeros((0, DIM)), 0))
        views.append(view)
    return [views[i] for i in rng.permutation(len(views))]


def _score_key(score: float) -> float:
    return -math.inf if math.isnan(score) else score


def same(a: RoutingPlan, b: RoutingPlan) -> bool:
    """Plans are equal, counting nan scores as equal."""
    return repr(a) == repr(b)


def check_contract(plan: RoutingPlan, silos: Sequence[SiloView], max_silos: int | None) -> None:
    names = [d.silo for d in plan.decisions]
    assert Counter(names) == Counter(s.name for s in silos), "every silo decided exactly once"
    by_name = {s.name: s for s in silos}
    selected = plan.selected
    assert selected == [d.silo for d in plan.decisions if d.selected]
    assert all(by_name[n].healthy for n in selected), "an unhealthy silo was selected"
    for decision in plan.decisions:
        if not by_name[decision.silo].healthy:
            assert decision.reason == by_name[decision.silo].health_reason
        assert decision.reason, "every decision says why"
    if max_silos is not None:
        assert len(selected) <= max_silos
    if any(s.healthy for s in silos):
        assert selected, "zero silos selected while a healthy silo exists"
    flags = [d.selected for d in plan.decisions]
    assert flags == sorted(flags, reverse=True), "selected silos come first"
    for group in (plan.decisions[: len(selected)], plan.decisions[len(selected) :]):
        keys = [_score_key(d.score) for d in group]
        assert keys == sorted(keys, reverse=True), "ranked by score, unscored last"
    assert {d.silo for d in plan.skipped} == set(names) - set(selected)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_router_contract(
    strategy: str, federation: Federation, learned: LearnedRouter, relevance: LearnedRouter
) -> None:
    router = STRATEGIES[strategy](learned, relevance)
    assert isinstance(router, Router) and router.name == strategy.split("-")[0]
    rng = np.random.default_rng(7)
    for _ in range(60):
        silos = _scenario(federation, rng)
        max_silos = [None, 1, 2, 3, 6][int(rng.integers(5))]
        query = federation.query(rng) if rng.random() < 0.7 else unit(rng.normal(size=DIM))
        plan = router.route(query, silos, max_silos=max_silos)
        assert plan.strategy == router.name
        check_contract(plan, silos, max_silos)
        assert same(plan, router.route(query, silos, max_silos=max_silos)), "routing is deterministic"
    down = [replace(v, healthy=False, health_reason="circuit open") for v in federation.views]
    plan = router.route(federation.query(rng), down)
    assert plan.selected == [] and {d.reason for d in plan.decisions} == {"circuit open"}
    assert router.route(federation.query(rng), []).decisions == ()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_router_rejects_bad_input(
    strategy: str, federation: Federation, learned: LearnedRouter, relevance: LearnedRouter
) -> None:
    router = STRATEGIES[strategy](learned, relevance)
    q = federation.query(np.random.default_rng(0))
    for bad in (np.full(DIM, np.nan), np.zeros(DIM), np.ones((2, DIM))):
        with pytest.raises(ValueError, match="query"):
            router.route(bad, federation.views)
    with pytest.raises(ValueError, match="max_silos"):
        router.route(q, federation.views, max_silos=0)
    with pytest.raises(ValueError, match="duplicate silo names: silo0"):
        router.route(q, [*federation.views, federation.views[0]])


def test_centroid_picks_the_topical_silo(federation: Federation, test_examples: list[TrainingExample]) -> None:
    figures = evaluate_routing(CentroidRouter(), test_examples)
    assert figures["silo_recall"] >= 0.95 and figures["fraction_asked"] <= 0.5, figures
    rng = np.random.default_rng(3)
    for topic in range(len(federation.centres)):
        plan = CentroidRouter().route(federation.query(rng, topic), federation.views)
        assert plan.selected[0] == f"silo{topic // 2}"
        assert plan.decisions[0].reason.startswith("best centroid ")


def test_centroid_reasons(federation: Federation) -> None:
    views = list(federation.views)
    views[1] = replace(views[1], healthy=False, health_reason="circuit open after 5 failures (retry in 12 s)")
    views[2] = replace(views[2], card=None)
    views[3] = replace(views[3], card=make_card("silo3", np.zeros((0, DIM)), 0))
    query = unit(federation.centres[0])
    plan = CentroidRouter(threshold=0.35, top_m=3).route(query, views)
    by_name = {d.silo: d for d in plan.decisions}
    assert plan.selected == ["silo0"]
    assert by_name["silo0"].reason == f"best centroid {by_name['silo0'].score:.2f} >= 0.35"
    assert by_name["silo1"].reason == "circuit open after 5 failures (retry in 12 s)"
    assert by_name["silo2"].reason == "no card yet" and math.isnan(by_name["silo2"].score)
    assert by_name["silo3"].reason == "empty silo" and by_name["silo3"].score == -math.inf
    assert by_name["silo4"].reason.startswith("below threshold ") and by_name["silo4"].reason.endswith(" < 0.35")
    assert [d.silo for d in plan.decisions[-2:]] == ["silo3", "silo2"], "empty, then unscored, last"

    fallback = CentroidRouter(threshold=0.999).route(query, views)
    assert fallback.selected == ["silo0"]
    assert fallback.decisions[0].reason.startswith("best available ") and "below threshold 1.00" in (
        fallback.decisions[0].reason
    )
    uncarded = [replace(v, card=None) for v in federation.views]
    assert CentroidRouter().route(query, uncarded).decisions[0].reason == "no card yet; asked as fallback"


def test_top_m_and_budget(federation: Federation) -> None:
    query = unit(federation.centres[0])
    plan = CentroidRouter(threshold=-1.0, top_m=2).route(query, federation.views)
    assert len(plan.selected) == 2 and plan.skipped[0].reason == "over top-m (2)"
    plan = CentroidRouter(threshold=-1.0, top_m=4).route(query, federation.views, max_silos=2)
    assert len(plan.selected) == 2 and plan.skipped[0].reason == "over budget (max 2 silos)"
    plan = AllRouter().route(query, federation.views, max_silos=2)
    assert plan.selected == ["silo4", "silo3"], "the budget keeps the largest silos"
    assert {d.reason for d in plan.decisions} == {"all strategy", "over budget (max 2 silos)"}
    assert len(AllRouter().route(query, federation.views).selected) == len(federation.views)


def test_skips_for_the_budget_or_an_open_breaker_are_degraded_and_top_m_or_relevance_are_not(
    federation: Federation,
) -> None:
    query = unit(federation.centres[0])
    top_m = CentroidRouter(threshold=-1.0, top_m=2).route(query, federation.views)
    assert not any(d.degraded for d in top_m.skipped)  # routing, not degradation
    relevant = CentroidRouter(threshold=0.9).route(query, federation.views)
    assert relevant.skipped and not any(d.degraded for d in relevant.skipped)
    budget = AllRouter().route(query, federation.views, max_silos=2)
    assert all(d.degraded for d in budget.skipped)
    broken = [
        replace(v, healthy=False, health_reason="circuit open") if v.name == "silo4" else v for v in federation.views
    ]
    plan = AllRouter().route(query, broken)
    assert [(d.silo, d.degraded, d.reason) for d in plan.skipped] == [("silo4", True, "circuit open")]


@pytest.mark.parametrize(("threshold", "top_m"), [(1.5, 3), (-2.0, 3), (math.nan, 3), (0.3, 0), (0.3, 2.5)])
def test_centroid_validates_parameters(threshold: float, top_m: int) -> None:
    with pytest.raises(ValueError):
        CentroidRouter(threshold=threshold, top_m=top_m)


@pytest.mark.parametrize("model", ["share", "relevance"])
def test_learned_matches_or_beats_centroid(
    model: str,
    learned: LearnedRouter,
    relevance: LearnedRouter,
    test_examples: list[TrainingExample],
    train_examples: list[TrainingExample],
) -> None:
    learned = learned if model == "share" else relevance
    own = evaluate_routing(learned, test_examples)
    assert own["silo_recall"] >= 0.95 and own["recall"] >= 0.95 and own["fraction_asked"] <= 0.5, own
    centroid = evaluate_routing(CentroidRouter(), test_examples)
    # On the recall / cost curve: some setting asks no more silos at no lower recall.
    if model == "share":
        settings = [learned.with_coverage(c) for c in (0.9, 0.95, 0.99)]
        settings += [learned.with_threshold(t) for t in (0.02, 0.05, 0.1)]
    else:
        settings = [learned.with_threshold(t) for t in (0.1, 0.2, 0.3, 0.5)]
    curve = [evaluate_routing(router, test_examples) for router in settings]
    assert any(
        c["fraction_asked"] <= centroid["fraction_asked"] and c["silo_recall"] >= centroid["silo_recall"] for c in curve
    ), (centroid, curve)
    # At an equal budget, the learned ranking finds at least as many relevant silos.
    for budget in (1, 2):
        ranked = evaluate_routing(learned.with_threshold(0.0), test_examples, max_silos=budget)
        baseline = evaluate_routing(CentroidRouter(threshold=-1.0, top_m=6), test_examples, max_silos=budget)
        assert ranked["silo_recall"] >= baseline["silo_recall"], (budget, ranked, baseline)
    assert evaluate_routing(learned, train_examples)["silo_recall"] >= 0.95


@pytest.mark.parametrize("form", ["learned", "learned-share-threshold", "learned-relevance"])
def test_learned_save_load_round_trip(
    form: str,
    learned: LearnedRouter,
    relevance: LearnedRouter,
    test_examples: list[TrainingExample],
    tmp_path: Path,
) -> None:
    router = STRATEGIES[form](learned, relevance)
    assert isinstance(router, LearnedRouter)
    router = router.with_selection(router.selection, calibration={"target_recall": 0.95, "cv_recall": 0.951})
    model_file = tmp_path / "router.json"
    router.save(model_file)
    data = json.loads(model_file.read_text())
    assert data["format"] == "fedrag-learned-router" and data["version"] == 2
    assert (data["model"], data["selection"]) == (router.model, router.selection)
    assert data["silo_names"] == [f"silo{i}" for i in range(6)]
    assert data["training"]["examples"] == 300
    loaded = LearnedRouter.load(model_file)
    assert (loaded.model, loaded.selection, loaded.threshold, loaded.coverage, loaded.calibration) == (
        router.model,
        router.selection,
        router.threshold,
        router.coverage,
        {"target_recall": 0.95, "cv_recall": 0.951},
    )
    for example in test_examples[:50]:
        for budget in (None, 1):
            assert same(
                loaded.route(example.query, example.silos, max_silos=budget),
                router.route(example.query, example.silos, max_silos=budget),
            )
    assert [p.name for p in model_file.parent.iterdir()] == ["router.json"], "no temporary file left behind"


def _edit(field: str, value: object) -> Callable[[dict[str, object]], bytes]:
    def apply(data: dict[str, object]) -> bytes:
        return json.dumps({**data, field: value}).encode()

    return apply


GARBAGE: dict[str, Callable[[dict[str, object]], bytes]] = {
    "binary": lambda _: b"\x80\x81\xfe not text",
    "not json": lambda _: b"{weights: [1, 2",
    "pickle": lambda data: pickle.dumps(data),
    "list": lambda _: b"[1, 2, 3]",
    "truncated": lambda data: json.dumps(data).encode()[:200],
    "other format": _edit("format", "something-else"),
    "future version": _edit("version", 99),
    "other features": _edit("feature_set", "card-sims-v0"),
    "short weights": _edit("weights", [0.1, 0.2]),
    "string weight": _edit("weights", ["1", 0, 0, 0, 0, 0]),
    "nan weight": lambda data: json.dumps({**data, "intercept": float("nan")}).encode(),
    "huge weight": lambda data: json.dumps({**data, "intercept": 7}).replace(": 7", ": 1" + "0" * 400).encode(),
    "zero std": _edit("feature_std", [0.0] * 6),
    "threshold": _edit("threshold", 1.5),
    "bias mismatch": _edit("silo_bias", [0.0]),
    "duplicate silos": _edit("silo_names", ["a", "a", "b", "c", "d", "e"]),
    "unknown model": _edit("model", "forest"),
    "missing model": lambda data: json.dumps({k: v for k, v in data.items() if k != "model"}).encode(),
    "unknown selection": _edit("selection", "top-3"),
    "zero coverage": _edit("coverage", 0.0),
    "coverage above one": _edit("coverage", 1.5),
    "string coverage": _edit("coverage", "0.9"),
    "coverage of a relevance model": _edit("model", "relevance"),
    "calibration not numbers": _edit("calibration", {"cv_recall": "high"}),
    "boolean version": _edit("version", True),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_learned_load_rejects_bad_files(kind: str, model_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(GARBAGE[kind](json.loads(model_file.read_text())))
    with pytest.raises(ConfigError) as info:
        LearnedRouter.load(path)
    assert str(path) in info.value.detail


def test_learned_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        LearnedRouter.load(tmp_path / "absent.json")


def test_no_pickle_in_router_package() -> None:
    sources = sorted(ROUTER_DIR.glob("*.py"))
    assert sources
    assert [p.name for p in sources if "pickle" in p.read_text()] == []


def test_unseen_silo_is_routable(federation: Federation, model_file: Path) -> None:
    loaded = LearnedRouter.load(model_file)
    rng = np.random.default_rng(11)
    topic = unit(rng.normal(size=DIM))
    points = unit(topic + 0.9 * rng.normal(size=(80, DIM)) / math.sqrt(DIM))
    newcomer = SiloView(name="newcomer", card=make_card("newcomer", points.mean(axis=0), 80))
    silos = [*federation.views, newcomer]
    for _ in range(10):
        query = unit(topic + QUERY_SPREAD * rng.normal(size=DIM) / math.sqrt(DIM))
        plan = loaded.route(query, silos)
        check_contract(plan, silos, None)
        assert plan.selected[0] == "newcomer", plan


def test_learned_train_validates(federation: Federation, train_examples: list[TrainingExample]) -> None:
    with pytest.raises(ValueError, match="both relevant and irrelevant"):
        LearnedRouter.train([])
    everything = [replace(e, relevant=frozenset(v.name for v in e.silos), shares=None) for e in train_examples[:20]]
    with pytest.raises(ValueError, match="both relevant and irrelevant"):
        LearnedRouter.train(everything)
    with pytest.raises(ValueError, match="both relevant and irrelevant"):
        LearnedRouter.train(everything, model="relevance")
    with pytest.raises(ValueError, match="l2"):
        LearnedRouter.train(train_examples, l2=0.0)
    with pytest.raises(ValueError, match="threshold"):
        LearnedRouter.train(train_examples, threshold=1.5)
    with pytest.raises(ValueError, match="coverage"):
        LearnedRouter.train(train_examples, coverage=0.0)
    with pytest.raises(ValueError, match="coverage selection needs a share model"):
        LearnedRouter.train(train_examples, model="relevance", selection="coverage")
    with pytest.raises(ValueError, match="model"):
        LearnedRouter.train(train_examples, model="forest")  # type: ignore[arg-type]
    for model in ("share", "relevance"):
        again = LearnedRouter.train(train_examples, model=model)
        twice = LearnedRouter.train(train_examples, model=model)
        assert again.intercept == twice.intercept and np.array_equal(again.weights, twice.weights), "deterministic"


def test_evaluate_routing_figures(federation: Federation) -> None:
    query = unit(federation.centres[0])
    examples = [
        # budget 2 keeps silo4 and silo3: half the relevant silos, 0.8 of the top-k
        TrainingExample(query, federation.views, frozenset({"silo4", "silo0"}), {"silo4": 0.8, "silo0": 0.2}),
        TrainingExample(query, federation.views, frozenset({"silo3"})),  # no shares: relevant silos count equally
        TrainingExample(query, federation.views, frozenset()),  # no relevant silo: not in the recall means
    ]
    figures = evaluate_routing(AllRouter(), examples, max_silos=2)
    assert figures == pytest.approx({"silo_recall": 0.75, "recall": 0.9, "fraction_asked": 2 / 6})
    with pytest.raises(ValueError):
        evaluate_routing(AllRouter(), [])


def test_the_guard_adds_the_silo_with_the_closest_centroid_and_no_other(
    learned: LearnedRouter, federation: Federation, test_examples: list[TrainingExample]
) -> None:
    from router.features import centroid_similarities

    frugal = learned.with_coverage(0.2)  # asks so few silos that it often misses the closest one
    guarded = frugal.with_guard()
    added = 0
    for example in test_examples:
        plain = frugal.route(example.query, federation.views)
        with_guard = guarded.route(example.query, federation.views)
        closest = max(federation.views, key=lambda v: centroid_similarities(unit(example.query), v.card).max())
        assert closest.name in with_guard.selected
        assert set(with_guard.selected) - set(plain.selected) <= {closest.name}
        added += closest.name not in plain.selected
    assert added > 0, "the scenario never exercised the guard"
    assert guarded.with_threshold(0.2).guard and not frugal.guard


def test_make_router(model_file: Path) -> None:
    assert isinstance(make_router("all"), AllRouter)
    centroid = make_router("Centroid", threshold=0.4, top_m=2)
    assert isinstance(centroid, CentroidRouter) and (centroid.threshold, centroid.top_m) == (0.4, 2)
    learned = make_router("learned", model_path=model_file, threshold=0.2)
    assert isinstance(learned, LearnedRouter) and (learned.selection, learned.threshold) == ("threshold", 0.2)
    saved = make_router("learned", model_path=model_file)
    assert isinstance(saved, LearnedRouter) and (saved.selection, saved.coverage) == ("coverage", 0.95)
    assert make_router("learned", model_path=model_file, threshold=0.2, guard=True).guard  # type: ignore[union-attr]
    covering = make_router("learned", model_path=model_file, coverage=0.8, top_m=2)
    assert isinstance(covering, LearnedRouter) and (covering.selection, covering.coverage) == ("coverage", 0.8)
    assert isinstance(make_router("centroid", coverage=0.8), CentroidRouter), "options of other strategies ignored"
    with pytest.raises(ConfigError, match="threshold or a coverage, not both"):
        make_router("learned", model_path=model_file, threshold=0.2, coverage=0.8)
    with pytest.raises(ConfigError, match="coverage"):
        make_router("learned", model_path=model_file, coverage=0.0)
    assert ROUTER_NAMES == ("all", "centroid", "learned")
    with pytest.raises(ConfigError, match="unknown router 'nope'; choose one of: all, centroid, learned"):
        make_router("nope")
    with pytest.raises(ConfigError, match="model_path"):
        make_router("learned")
    with pytest.raises(ConfigError, match="threshold"):
        make_router("centroid", threshold=3.0)
    with pytest.raises(ConfigError, match="threshold"):
        make_router("learned", model_path=model_file, threshold=-0.1)
