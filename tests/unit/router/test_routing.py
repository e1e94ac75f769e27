"""Routers on a seeded synthetic federation: contract, quality figures, model files."""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from federation.errors import ConfigError
from federation.membership import EmbeddingSpec
from federation.protocol import Matrix, PolicySummary, SiloCard
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

pytestmark = pytest.mark.unit

DIM = 32
K = 10
QUERY_SPREAD = 1.0
# Per silo: spread of its vectors around its two topic centres, and vectors per topic.
SILO_SPREADS = (0.7, 0.9, 1.1, 1.3, 0.8, 1.2)
SILO_SIZES = (20, 40, 80, 160, 250, 60)
ROUTER_DIR = Path(__file__).resolve().parents[3] / "router"


def unit(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def make_card(name: str, centroids: np.ndarray, chunk_count: int) -> SiloCard:
    return SiloCard(
        name=name,
        description=f"{name} documents",
        chunk_count=chunk_count,
        embedding=EmbeddingSpec(model="m", dimension=DIM, fingerprint="sha256:0123456789"),
        centroids=Matrix.from_numpy(centroids.reshape(-1, DIM)),
        policy=PolicySummary(max_k=10, min_score=0.0, release_text=True, dp_enabled=False),
    )


@dataclass(frozen=True)
class Federation:
    """Six silos, each holding vectors around its own two topic centres."""

    centres: np.ndarray  # (12, DIM): topic t belongs to silo t // 2
    vectors: np.ndarray  # every silo's vectors, stacked
    owner: np.ndarray  # index of the silo holding each vector
    views: tuple[SiloView, ...]

    def query(self, rng: np.random.Generator, topic: int | None = None) -> np.ndarray:
        topic = int(rng.integers(len(self.centres))) if topic is None else topic
        return unit(self.centres[topic] + QUERY_SPREAD * rng.normal(size=DIM) / math.sqrt(DIM))

    def examples(self, n: int, seed: int) -> list[TrainingExample]:
        """Topical queries, labelled with the silos holding the exact top-k over all silos."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            q = self.query(rng)
            top = np.argsort(-(self.vectors @ q))[:K]
            relevant = frozenset(self.views[self.owner[i]].name for i in top)
            out.append(TrainingExample(query=q, silos=self.views, relevant=relevant))
        return out


def build_federation(seed: int = 0) -> Federation:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(2 * len(SILO_SIZES), DIM)))
    vectors, owner, views = [], [], []
    for s, (spread, size) in enumerate(zip(SILO_SPREADS, SILO_SIZES, strict=True)):
        means = []
        for topic in (2 * s, 2 * s + 1):
            points = unit(centres[topic] + spread * rng.normal(size=(size, DIM)) / math.sqrt(DIM))
            vectors.append(points)
            owner += [s] * size
            means.append(points.mean(axis=0))
        description = unit(centres[2 * s] + centres[2 * s + 1] + 0.5 * rng.normal(size=DIM) / math.sqrt(DIM))
        card = make_card(f"silo{s}", np.array(means), 2 * size)
        views.append(SiloView(name=f"silo{s}", card=card, description_vector=description))
    return Federation(centres, np.vstack(vectors), np.array(owner), tuple(views))


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
def model_file(learned: LearnedRouter, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("router") / "router.json"
    learned.save(path)
    return path


STRATEGIES: dict[str, Callable[[LearnedRouter], Router]] = {
    "all": lambda _: AllRouter(),
    "centroid": lambda _: CentroidRouter(),
    "learned": lambda trained: trained,
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
def test_router_contract(strategy: str, federation: Federation, learned: LearnedRouter) -> None:
    router = STRATEGIES[strategy](learned)
    assert isinstance(router, Router) and router.name == strategy
    rng = np.random.default_rng(7)
    for _ in range(60):
        silos = _scenario(federation, rng)
        max_silos = [None, 1, 2, 3, 6][int(rng.integers(5))]
        query = federation.query(rng) if rng.random() < 0.7 else unit(rng.normal(size=DIM))
        plan = router.route(query, silos, max_silos=max_silos)
        assert plan.strategy == strategy
        check_contract(plan, silos, max_silos)
        assert same(plan, router.route(query, silos, max_silos=max_silos)), "routing is deterministic"
    down = [replace(v, healthy=False, health_reason="circuit open") for v in federation.views]
    plan = router.route(federation.query(rng), down)
    assert plan.selected == [] and {d.reason for d in plan.decisions} == {"circuit open"}
    assert router.route(federation.query(rng), []).decisions == ()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_router_rejects_bad_input(strategy: str, federation: Federation, learned: LearnedRouter) -> None:
    router = STRATEGIES[strategy](learned)
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


@pytest.mark.parametrize(("threshold", "top_m"), [(1.5, 3), (-2.0, 3), (math.nan, 3), (0.3, 0), (0.3, 2.5)])
def test_centroid_validates_parameters(threshold: float, top_m: int) -> None:
    with pytest.raises(ValueError):
        CentroidRouter(threshold=threshold, top_m=top_m)


def test_learned_matches_or_beats_centroid(
    learned: LearnedRouter, test_examples: list[TrainingExample], train_examples: list[TrainingExample]
) -> None:
    own = evaluate_routing(learned, test_examples)
    assert own["silo_recall"] >= 0.95 and own["fraction_asked"] <= 0.5, own
    centroid = evaluate_routing(CentroidRouter(), test_examples)
    # On the recall / cost curve: some threshold asks no more silos at no lower recall.
    curve = [evaluate_routing(learned.with_threshold(t), test_examples) for t in (0.1, 0.2, 0.3, 0.5)]
    assert any(
        c["fraction_asked"] <= centroid["fraction_asked"] and c["silo_recall"] >= centroid["silo_recall"] for c in curve
    ), (centroid, curve)
    # At an equal budget, the learned ranking finds at least as many relevant silos.
    for budget in (1, 2):
        ranked = evaluate_routing(learned.with_threshold(0.0), test_examples, max_silos=budget)
        baseline = evaluate_routing(CentroidRouter(threshold=-1.0, top_m=6), test_examples, max_silos=budget)
        assert ranked["silo_recall"] >= baseline["silo_recall"], (budget, ranked, baseline)
    assert evaluate_routing(learned, train_examples)["silo_recall"] >= 0.95


def test_learned_save_load_round_trip(
    learned: LearnedRouter, model_file: Path, test_examples: list[TrainingExample]
) -> None:
    data = json.loads(model_file.read_text())
    assert data["format"] == "fedrag-learned-router" and data["version"] == 1
    assert data["silo_names"] == [f"silo{i}" for i in range(6)]
    assert data["training"]["examples"] == 300
    loaded = LearnedRouter.load(model_file)
    for example in test_examples[:50]:
        for budget in (None, 1):
            assert same(
                loaded.route(example.query, example.silos, max_silos=budget),
                learned.route(example.query, example.silos, max_silos=budget),
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
    everything = [replace(e, relevant=frozenset(v.name for v in e.silos)) for e in train_examples[:20]]
    with pytest.raises(ValueError, match="both relevant and irrelevant"):
        LearnedRouter.train(everything)
    with pytest.raises(ValueError, match="l2"):
        LearnedRouter.train(train_examples, l2=0.0)
    with pytest.raises(ValueError, match="threshold"):
        LearnedRouter.train(train_examples, threshold=1.5)
    again = LearnedRouter.train(train_examples)
    twice = LearnedRouter.train(train_examples)
    assert again.intercept == twice.intercept and np.array_equal(again.weights, twice.weights), "deterministic"


def test_evaluate_routing_figures(federation: Federation) -> None:
    query = unit(federation.centres[0])
    examples = [
        TrainingExample(query, federation.views, frozenset({"silo4", "silo0"})),  # budget 2 keeps silo4, silo3
        TrainingExample(query, federation.views, frozenset({"silo3"})),
        TrainingExample(query, federation.views, frozenset()),  # no relevant silo: not in the recall mean
    ]
    figures = evaluate_routing(AllRouter(), examples, max_silos=2)
    assert figures == pytest.approx({"silo_recall": 0.75, "fraction_asked": 2 / 6})
    with pytest.raises(ValueError):
        evaluate_routing(AllRouter(), [])


def test_make_router(model_file: Path) -> None:
    assert isinstance(make_router("all"), AllRouter)
    centroid = make_router("Centroid", threshold=0.4, top_m=2)
    assert isinstance(centroid, CentroidRouter) and (centroid.threshold, centroid.top_m) == (0.4, 2)
    learned = make_router("learned", model_path=model_file, threshold=0.2)
    assert isinstance(learned, LearnedRouter) and learned.threshold == 0.2
    assert ROUTER_NAMES == ("all", "centroid", "learned")
    with pytest.raises(ConfigError, match="unknown router 'nope'; choose one of: all, centroid, learned"):
        make_router("nope")
    with pytest.raises(ConfigError, match="model_path"):
        make_router("learned")
    with pytest.raises(ConfigError, match="threshold"):
        make_router("centroid", threshold=3.0)
    with pytest.raises(ConfigError, match="threshold"):
        make_router("learned", model_path=model_file, threshold=-0.1)
