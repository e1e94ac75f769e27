"""`fedrag eval run` as a user runs it: both suites, every kind of configuration, a report; resumed after a crash.

fed-all also answers a few retrieval questions and one unanswerable question free-form, in the
old (free) and the new (structured) format, with the abstention threshold calibrated first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("heavy")]  # one after another on one worker

BASE = [
    "--suite",
    "all",
    "--limit",
    "8",
    "--mc-limit",
    "2",
    "--code-limit",
    "1",
    "--docs-per-corpus",
    "20",
    "--silos",
    "3",
    "--configs",
    "no-rag,central,fed-all,fed-routed-centroid,fed-routed-learned,fed-dp-eps1,fed-merge-rrf,fed-hybrid,fed-all@topical",
    "--llm-configs",
    "no-rag,fed-all",
    "--mc-max-tokens",
    "32",
    "--code-max-tokens",
    "64",
    "--context-tokens",
    "1024",
    "--answer-limit",
    "2",
    "--abstain-limit",
    "1",
    "--calibration-limit",
    "4",
    "--answer-max-tokens",
    "128",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def fedrag_eval(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation", "eval", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]


@pytest.mark.timeout(1500)
def test_eval_run_reports_every_configuration_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    # A run killed while it asks questions (after the federations are built) ...
    proc = subprocess.Popen(
        [sys.executable, "-m", "federation", "eval", "run", *BASE, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    log = out / "questions.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 12:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = rows(out)
    assert len(before) >= 12, "the first run should have logged rows before it was killed"

    # ... continues where it stopped: no question is asked twice.
    result = fedrag_eval("run", *BASE, "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Progress lines (not a terminal): each step counts its own units, never past its total.
    steps = re.findall(r"^(.+): (\d+)/(\d+) \(", result.stdout + result.stderr, flags=re.MULTILINE)
    assert steps and all(int(done) <= int(total) for _, done, total in steps), steps
    after = rows(out)
    keys = [(r["suite"], r["config"], r["kind"], r["id"]) for r in after]
    assert len(keys) == len(set(keys))
    assert after[: len(before)] == before

    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for suite in ("medical", "code"):
        assert f"## Suite `{suite}`" in report
        assert "**Routing check**" in report
        configs = results["suites"][suite]
        for name in (
            "central",
            "fed-all",
            "fed-routed-centroid",
            "fed-routed-learned",
            "fed-dp-eps1",
            "fed-merge-rrf",
            "fed-hybrid",
        ):
            retrieval = configs[name]["retrieval"]
            assert retrieval["questions"] > 0
            assert (
                0.0
                <= retrieval["recall@k"]["low"]
                <= retrieval["recall@k"]["mean"]
                <= retrieval["recall@k"]["high"]
                <= 1.0
            )
        # the exact central index finds the gold passage of most synonym / FAQ questions
        assert configs["central"]["retrieval"]["recall@k"]["mean"] >= 0.5
        assert configs["central"]["retrieval"]["overlap@k_vs_central"]["mean"] == pytest.approx(1.0)
        assert configs["fed-all"]["retrieval"]["silo_fraction"] == pytest.approx(1.0)
        assert configs["fed-routed-centroid"]["retrieval"]["silo_fraction"] < 1.0
        check = configs["fed-routed-learned"]["routing_check"]
        assert check["call_fraction"] < 1.0 and 0.0 <= check["recall_ratio"]["mean"] <= 1.5
        assert configs["fed-all"]["routing_check"] is None
        assert set(configs["fed-dp-eps1"]["retrieval"]["epsilon_per_silo"]) <= set(
            r for row in after if row["config"] == "fed-dp-eps1" for r in row["silos_asked"]
        )
        assert configs["fed-dp-eps1"]["retrieval"]["epsilon_per_silo"]
        mc = configs["no-rag"]["multiple_choice"]
        assert mc["questions"] == 2 and mc["accuracy"] is not None
        assert configs["fed-all"]["multiple_choice"]["questions"] == 2
        # structured multiple choice always names an option, even in 32 tokens
        assert mc["unparseable"] == 0

        # free-form answers, before (free) and after (structured), on the same questions
        free_form = configs["fed-all"]["free_form"]
        assert set(free_form) == {"free", "structured"}
        for figures in free_form.values():
            assert (figures["answerable"], figures["unanswerable"], figures["errors"]) == (2, 1, 0)
            assert figures["abstention_recall"]["n"] == 1
            assert figures["finish_reasons"]
        free = free_form["free"]
        assert free["generated"] == 3 and free["gateway_abstained"] == 0  # the old gateway never abstained
        for key in ("well_formed", "degenerate", "generate_ms"):
            assert free[key]["low"] <= free[key]["mean"] <= free[key]["high"]
        calibration = configs["fed-all"]["abstention_calibration"]
        assert calibration["unanswerable"]["n"] == 4 and calibration["answerable"]["n"] == 6  # 8 - 2 answered
        assert calibration["threshold"] is None or 0.0 < calibration["threshold"] < 1.0
        assert not configs["central"]["free_form"]  # only --llm-configs answer free-form
    assert results["suites"]["code"]["fed-all"]["code"]["problems"] == 1
    assert "| config | metric | free (before) | structured (after) |" in report
    assert "### Abstention threshold (`abstain_below`" in report
    # unanswerable questions are about documents no silo holds
    unanswerable = [r for r in after if r["kind"] == "calibration" or r.get("answerable") is False]
    assert len(unanswerable) == 2 * (4 + 2 * 1)
    for row in unanswerable:
        assert not set(row["gold"]) & set(row.get("sources", row.get("retrieved", [])))
    for plot in ("recall_vs_silos.png", "accuracy.png", "latency.png", "answer_quality.png"):
        assert (out / plot).stat().st_size > 1000

    # a finished run resumed asks nothing again; a run with other settings is refused
    again = fedrag_eval("run", *BASE, "--out", str(out))
    assert again.returncode == 0 and len(rows(out)) == len(after)
    other = fedrag_eval("run", *BASE, "--limit", "9", "--out", str(out))
    assert other.returncode == 1 and "other settings" in other.stderr
