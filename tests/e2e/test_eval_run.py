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
    "no-rag,central,fed-all,fed-routed-centroid,fed-routed-learned,fed-noisy-eps1,fed-merge-rrf,fed-hybrid,fed-all@topical",
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
            "fed-noisy-eps1",
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
        assert set(configs["fed-noisy-eps1"]["retrieval"]["epsilon_per_silo"]) <= set(
            r for row in after if row["config"] == "fed-noisy-eps1" for r in row["silos_asked"]
        )
        assert configs["fed-noisy-eps1"]["retrieval"]["epsilon_per_silo"]
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


def own_corpus(tmp_path: Path) -> tuple[Path, Path]:
    """A corpus of three silo folders and four questions about it, as a user would write them."""
    corpus = tmp_path / "corpus"
    documents = {
        "cardiology/hcm.md": "# Hypertrophic cardiomyopathy\n\nThe wall between the ventricles thickens.\n",
        "cardiology/afib.md": "# Atrial fibrillation\n\nAn irregular heart rhythm that raises stroke risk.\n",
        "dermatology/psoriasis.md": "# Psoriasis\n\nRed, scaly patches on the knees and elbows.\n",
        "python/json.md": "# Parsing JSON\n\njson.loads turns a JSON string into Python dicts and lists.\n",
    }
    for name, text in documents.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text)
    questions = tmp_path / "questions.jsonl"
    asked = [
        ("Which disease thickens the wall between the heart's ventricles?", "hcm.md"),
        ("What irregular heartbeat increases stroke risk?", "afib.md"),
        ("What causes scaly red patches on elbows?", "psoriasis.md"),
        ("How do I turn a JSON string into a dict?", "json.md"),
    ]
    questions.write_text("".join(json.dumps({"question": q, "gold": g}) + "\n" for q, g in asked))
    return corpus, questions


def test_eval_run_measures_your_own_corpus_and_questions(tmp_path: Path) -> None:
    corpus, questions = own_corpus(tmp_path)
    out = tmp_path / "eval"
    own = ["--corpus", str(corpus), "--questions", str(questions), "--llm-configs", "", "--answer-configs", ""]
    done = fedrag_eval("run", *own, "--configs", "central,fed-all,fed-routed-centroid", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "## Suite `own`" in done.stdout and "4 documents in the silos; 4 retrieval questions" in done.stdout
    results = json.loads((out / "results.json").read_text())["suites"]["own"]
    every = results["fed-all"]["retrieval"]
    assert every["questions"] == 4 and every["silos_asked"] == 3.0  # one silo per folder
    assert every["recall@k"]["mean"] == results["central"]["retrieval"]["recall@k"]["mean"] == 1.0
    assert results["fed-routed-centroid"]["retrieval"]["silos_asked"] < 3.0
    # Other questions in the same OUT are another run: refused, not mixed into this one's figures.
    questions.write_text(json.dumps({"question": "What is psoriasis?", "gold": "psoriasis.md"}) + "\n")
    mixed = fedrag_eval("run", *own, "--configs", "central", "--out", str(out))
    assert mixed.returncode == 1 and "holds a run with other settings (own)" in mixed.stderr
    questions.write_text(json.dumps({"question": "What is gout?", "gold": "gout.md"}) + "\n")
    bad = fedrag_eval("run", *own, "--out", str(tmp_path / "other"))
    assert bad.returncode == 1 and "'gout.md' are not in the corpus" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "other").exists()


def test_eval_run_embeds_with_the_backend_it_is_given(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    corpus, questions = own_corpus(tmp_path)
    out = tmp_path / "eval"
    own = ["--corpus", str(corpus), "--questions", str(questions), "--llm-configs", "", "--configs", "fed-all"]
    done = fedrag_eval("run", *own, "--encoder-backend", "openvino-bf16", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    retrieval = json.loads((out / "results.json").read_text())["suites"]["own"]["fed-all"]["retrieval"]
    assert retrieval["recall@k"]["mean"] == 1.0
    memberships = list((out / "federations").rglob("federation.toml"))
    assert memberships and all('backend = "openvino-bf16"' in m.read_text() for m in memberships)
    bad = fedrag_eval("run", *own, "--encoder-backend", "onnx", "--out", str(tmp_path / "other"))
    assert bad.returncode == 1 and "--encoder-backend must be one of torch, openvino, openvino-bf16" in bad.stderr
