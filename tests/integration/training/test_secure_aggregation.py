"""SecAgg+ on the deployment engine: the secure sum is the plain sum, dropouts, failing closed.

The server is the real SecAgg+ ServerApp (``training.secure_aggregation``); the silos of the
first tests are fakes at the transport seam (``secagg_fake_app/fake_client.py``): they send
known arrays, so the unmasked aggregate can be checked against the plain aggregate of the
same updates. The last test is a real three-silo training run with SecAgg+ on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aggregation.adapters import fedavg_lora
from federation.config import DeploymentSiloSettings, TrainRunSettings
from tests.integration.training.conftest import TRAINING_SILOS
from tests.integration.training.secagg_fake_app.fake_client import FAKE_FILE, known_update
from training.adapter_files import ADAPTER_DIR, REPORT_FILE, adapter_config
from training.cli import run_training
from training.deployment import LocalDeployment, run_status, submit_run
from training.recorder import CHECKPOINT_FILE, PROGRESS_FILE
from training.run_config import settings_to_config
from training.secure_aggregation import FAILED_CODE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), pytest.mark.xdist_group("heavy")]

FAKE_APP = Path(__file__).parent / "secagg_fake_app"
EXAMPLES = (2, 4, 6, 9)  # the fake silos' weights: the weighted mean differs clearly from the plain mean
TOLERANCE = 1e-4  # quantisation: 2 * clipping_range / quantization_range / (examples / max_weight), and its mean


def _fake_settings(out: Path, *, timeout_s: float = 60.0) -> TrainRunSettings:
    settings = TrainRunSettings(strategy="fedavg-lora", rounds=1, output=out)
    settings.adapter.rank = 2
    settings.adapter.target_modules = ["q_proj"]
    settings.local.max_examples = 10  # SecAgg+'s max_weight
    settings.secure_aggregation.enabled = True
    settings.secure_aggregation.num_shares = 4
    settings.secure_aggregation.reconstruction_threshold = 3
    settings.deployment.min_nodes = len(EXAMPLES)
    settings.deployment.round_timeout_s = timeout_s
    settings.deployment.start_timeout_s = 60
    return settings


@pytest.fixture(scope="module")
def fake_silos(training_federation: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four silo directories (copies of a real one, so their SuperNodes start) with fake.json."""
    root = tmp_path_factory.mktemp("secagg-fed") / "fed"
    shutil.copytree(training_federation, root)
    silos: dict[str, Path] = {}
    for index, examples in enumerate(EXAMPLES):
        silo = root / "silos" / f"fake{index}"
        shutil.copytree(root / "silos" / "cl", silo)
        (silo / FAKE_FILE).write_text(json.dumps({"index": index, "examples": examples}), encoding="utf-8")
        silos[f"fake{index}"] = silo
    return silos


@pytest.fixture
def fake_deployment(fake_silos: dict[str, Path], tmp_path: Path) -> Iterator[LocalDeployment]:
    """A SuperLink and four fake SuperNodes (TLS and node auth on); markers cleared after."""
    with LocalDeployment(tmp_path / "flower", fake_silos) as deployment:
        yield deployment
    for silo in fake_silos.values():
        for marker in ("fail", "hang", "fitting"):
            (silo / marker).unlink(missing_ok=True)


def _wait_finished(deployment: LocalDeployment, run_id: str, deadline_s: float = 400.0) -> str:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status = str(run_status(deployment.home, run_id).get("status", ""))
        if status.startswith("finished"):
            return status
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish within {deadline_s:g} s")


def _expected(names_shapes: dict[str, tuple[int, ...]], indices: list[int]) -> dict[str, np.ndarray]:
    """The plain (non-secure) FedAvg of the same updates: our fedavg_lora, weighted by examples."""
    states = [{n: known_update(i, n, s, 1) for n, s in names_shapes.items()} for i in indices]
    return fedavg_lora(states, [float(EXAMPLES[i]) for i in indices])


def _check_sum(out: Path, indices: list[int]) -> None:
    with np.load(out / CHECKPOINT_FILE) as checkpoint:
        got = {name: checkpoint[name] for name in checkpoint.files}
    expected = _expected({n: v.shape for n, v in got.items()}, indices)
    assert sorted(got) == sorted(expected) and len(got) == 60  # 30 layers × q_proj × (A, B)
    worst = max(float(np.max(np.abs(got[n] - expected[n]))) for n in got)
    assert worst < TOLERANCE, f"secure aggregate differs from the plain one by {worst}"
    # The check can fail: the unweighted mean, or the mean with every silo, is clearly different.
    plain_mean = {n: np.mean([known_update(i, n, got[n].shape, 1) for i in indices], axis=0) for n in got}
    assert max(float(np.max(np.abs(got[n] - plain_mean[n]))) for n in got) > 100 * TOLERANCE


def _statuses(report: dict[str, object]) -> list[str]:
    nodes = report["nodes"]
    assert isinstance(nodes, list)
    return sorted(n["status"] for n in nodes[0].values())


def test_secure_aggregate_equals_the_plain_aggregate_and_a_silo_failing_in_fit_is_left_out(
    fake_deployment: LocalDeployment, fake_silos: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "all"
    run_id = submit_run(fake_deployment.home, settings_to_config(_fake_settings(out)), FAKE_APP)
    assert _wait_finished(fake_deployment, run_id) == "finished:completed"
    _check_sum(out, [0, 1, 2, 3])
    report = json.loads((out / REPORT_FILE).read_text())
    assert _statuses(report) == ["accepted"] * 4
    assert report["secure_aggregation"]["exchanges_per_round"] == [4]
    assert adapter_config(out / ADAPTER_DIR)["r"] == 2
    # One silo fails in fit (after it has shared its keys): the others' sum is still exact.
    (fake_silos["fake2"] / "fail").write_text("1")
    out = tmp_path / "one-fails"
    run_id = submit_run(fake_deployment.home, settings_to_config(_fake_settings(out)), FAKE_APP)
    assert _wait_finished(fake_deployment, run_id) == "finished:completed"
    _check_sum(out, [0, 1, 3])
    report = json.loads((out / REPORT_FILE).read_text())
    assert _statuses(report) == ["accepted", "accepted", "accepted", "dropped"]
    dropped = [n["reason"] for n in report["nodes"][0].values() if n["status"] == "dropped"]
    assert "fake silo 2 fails in fit" in dropped[0]


@pytest.mark.slow
def test_more_dropouts_than_the_threshold_allows_fail_closed(
    fake_deployment: LocalDeployment, fake_silos: dict[str, Path], tmp_path: Path
) -> None:
    for name in ("fake1", "fake3"):
        (fake_silos[name] / "fail").write_text("1")
    out = tmp_path / "two-fail"
    started = time.monotonic()
    run_id = submit_run(fake_deployment.home, settings_to_config(_fake_settings(out)), FAKE_APP)
    assert _wait_finished(fake_deployment, run_id) == "finished:failed"
    assert time.monotonic() - started < 300
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["error"]["code"] == FAILED_CODE
    detail = report["error"]["detail"]
    assert "round 1" in detail and "2 of 4 silos" in detail and "needs 3 live neighbours" in detail, detail
    assert "fake silo 1 fails in fit" in detail
    assert report["rounds"] == 0 and report["adapter"] is None
    assert not (out / CHECKPOINT_FILE).exists()


@pytest.mark.slow
@pytest.mark.xfail(
    run=False,
    reason="known open, intermittent: passed once in 115 s, then did not finish within 400 s; the three "
    "surviving silos answered all four SecAgg+ stages and no evaluate message reached them, so the ServerApp "
    "stalls after unmasking; cause not found yet (issue 9 note)",
)
def test_a_supernode_killed_after_sharing_its_keys_is_left_out_of_the_sum(
    fake_deployment: LocalDeployment, fake_silos: dict[str, Path], tmp_path: Path
) -> None:
    victim = fake_silos["fake1"]
    (victim / "hang").write_text("1")
    out = tmp_path / "killed"
    run_id = submit_run(fake_deployment.home, settings_to_config(_fake_settings(out, timeout_s=45)), FAKE_APP)
    deadline = time.monotonic() + 300
    while not (victim / "fitting").exists():  # its fit runs in the masked-vector stage, after the key shares
        assert time.monotonic() < deadline, "the fake silo never started its fit"
        time.sleep(0.5)
    process = next(p for p in fake_deployment._processes if p.name == "supernode-fake1")
    os.killpg(process.popen.pid, signal.SIGKILL)
    assert _wait_finished(fake_deployment, run_id) == "finished:completed"
    _check_sum(out, [0, 2, 3])
    report = json.loads((out / REPORT_FILE).read_text())
    assert _statuses(report) == ["accepted", "accepted", "accepted", "dropped"]


@pytest.mark.slow
def test_three_real_silos_with_secure_aggregation_lower_held_out_loss(
    training_federation: Path, tmp_path: Path
) -> None:
    fed = tmp_path / "fed"
    shutil.copytree(training_federation, fed)
    settings = TrainRunSettings(strategy="fedavg-lora", rounds=2, output=tmp_path / "out")
    settings.local.max_examples = 8
    settings.local.max_steps = 2
    settings.local.batch_size = 2
    settings.local.sources = 1
    settings.local.learning_rate = 5e-3
    settings.secure_aggregation.enabled = True
    settings.deployment.min_nodes = 3
    settings.deployment.round_timeout_s = 600
    settings.deployment.silos = [DeploymentSiloSettings(name=n, dir=fed / "silos" / n) for n in TRAINING_SILOS]

    report = run_training(settings)

    assert report["rounds"] == 2 and "error" not in report
    before, after = report["held_out_loss_before"], report["held_out_loss"]
    assert after[-1] < before, f"held-out loss did not fall: {before} -> {after}"
    assert all(sorted(n["status"] for n in nodes.values()) == ["accepted"] * 3 for nodes in report["nodes"])
    # Masked vectors, keys and shares: more bytes up than the adapter's float32 arrays.
    assert report["bytes_up_per_silo"][0] > report["bytes_down_per_silo"][0] / 2
    lines = (tmp_path / "out" / PROGRESS_FILE).read_text().splitlines()
    assert [json.loads(line)["secure_aggregation"]["exchanges"] for line in lines] == [4, 4]
    assert adapter_config(tmp_path / "out" / ADAPTER_DIR)["peft_type"] == "LORA"
