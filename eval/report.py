"""Summaries of a run's per-question rows: ``results.json`` and ``report.md``.

Every figure is computed from ``questions.jsonl``, so a report can be rewritten from the
log alone (``fedrag eval report DIR``). Means come with 95% bootstrap intervals; the
overlap with the central index compares each configuration's ranked passages with the
``central`` configuration's (exact search over every document) for the same question.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.answer_quality import summarise_answers, summarise_calibration
from eval.configs import EvalConfig, standard_configs
from eval.metrics import bootstrap_ci, interval, overlap_at_k, percentiles

__all__ = ["STEPS", "summarise", "write_report"]

STEPS = ("embed", "route", "search", "aggregate", "generate")


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _latency(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    steps: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for step, ms in (row.get("timings_ms") or {}).items():
            steps[step].append(float(ms))
    return {step: percentiles(values) for step, values in steps.items() if values}


def _retrieval(rows: Sequence[Mapping[str, Any]], central: Mapping[str, Sequence[str]], k: int) -> dict[str, Any]:
    overlaps = [
        overlap_at_k(row["passages"], central[row["id"]], k)
        for row in rows
        if row["id"] in central and central[row["id"]]
    ]
    epsilon: dict[str, float] = defaultdict(float)
    for row in rows:
        for silo, spent in (row.get("epsilon") or {}).items():
            epsilon[silo] += float(spent)
    return {
        "questions": len(rows),
        "recall@k": interval([row["recall"] for row in rows]),
        "ndcg@10": interval([row["ndcg"] for row in rows]),
        "overlap@k_vs_central": interval(overlaps),
        "silo_fraction": _mean(len(row["silos_asked"]) / max(1, row["silos_total"]) for row in rows),
        "silos_asked": _mean(len(row["silos_asked"]) for row in rows),
        "silo_recall": _mean(row.get("silo_recall") for row in rows),
        "bytes_per_question": _mean(row.get("bytes", 0) for row in rows),
        "partial": sum(1 for row in rows if row.get("partial")),
        "latency_ms": _latency(rows),
        "epsilon_per_silo": dict(sorted(epsilon.items())),
    }


ROUTING_TARGET_RECALL = 0.95
ROUTING_TARGET_CALLS = 0.5


def routing_check(routed: Sequence[Mapping[str, Any]], every: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A router against asking every silo, on the same questions: the issue's target is met or not.

    The router is trained on document titles that no evaluation question is about, and tested here on the
    suite's questions (synonyms, FAQ headings): a question distribution it was not trained on. Target:
    recall@k at least ``ROUTING_TARGET_RECALL`` of asking every silo, at most ``ROUTING_TARGET_CALLS``
    of its silo calls.
    """
    baseline = {row["id"]: row for row in every}
    pairs = [(row, baseline[row["id"]]) for row in routed if row["id"] in baseline]
    if not pairs or not sum(b["recall"] for _, b in pairs):
        return None
    got = [float(r["recall"]) for r, _ in pairs]
    full = [float(b["recall"]) for _, b in pairs]

    def ratio(indices: Any) -> float:
        picked = [int(i) for i in indices]
        total = sum(full[i] for i in picked)
        return sum(got[i] for i in picked) / total if total else 1.0

    point, low, high = bootstrap_ci([float(i) for i in range(len(pairs))], statistic=ratio)
    calls = sum(len(r["silos_asked"]) for r, _ in pairs) / max(1, sum(len(b["silos_asked"]) for _, b in pairs))
    return {
        "recall_ratio": {"mean": point, "low": low, "high": high, "n": len(pairs)},
        "call_fraction": calls,
        "met": point >= ROUTING_TARGET_RECALL and calls <= ROUTING_TARGET_CALLS,
    }


def _answers(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    graded = [row for row in rows if "correct" in row]
    tokens = [row.get("llm_tokens") or {} for row in rows]
    return {
        "questions": len(rows),
        "errors": sum(1 for row in rows if "error" in row),
        "accuracy": interval([1.0 if row["correct"] else 0.0 for row in graded]),
        "unparseable": sum(1 for row in graded if row.get("unparseable")),
        "citation_validity": _mean(row.get("citation_validity") for row in rows),
        "prompt_tokens": _mean(t.get("prompt") for t in tokens),
        "completion_tokens": _mean(t.get("completion") for t in tokens),
        "latency_ms": _latency(rows),
        "bytes_per_question": _mean(row.get("bytes", 0) for row in rows),
    }


def _code(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    graded = [row for row in rows if "passed" in row]
    statuses: dict[str, int] = defaultdict(int)
    for row in graded:
        statuses[row["sandbox"]] += 1
    return {
        "problems": len(rows),
        "errors": sum(1 for row in rows if "error" in row),
        "pass@1": interval([1.0 if row["passed"] else 0.0 for row in graded]),
        "sandbox": dict(sorted(statuses.items())),
        "latency_ms": _latency(rows),
    }


def summarise(rows: Iterable[Mapping[str, Any]], *, k: int = 10) -> dict[str, Any]:
    """Per suite and configuration: retrieval, answer and code figures."""
    grouped: dict[str, dict[str, dict[str, list[Mapping[str, Any]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for row in rows:
        grouped[row["suite"]][row["config"]][row["kind"]].append(row)
    order = {c.name: i for i, c in enumerate(standard_configs())}
    suites: dict[str, Any] = {}
    for suite, configs in grouped.items():
        central = {row["id"]: row["passages"] for row in configs.get("central", {}).get("retrieval", [])}
        summary: dict[str, Any] = {}
        for name in sorted(configs, key=lambda n: order.get(n, len(order))):
            kinds = configs[name]
            free_form = {
                kind.removeprefix("answer:"): summarise_answers(rows)
                for kind, rows in sorted(kinds.items())
                if kind.startswith("answer:")
            }
            summary[name] = {
                "retrieval": _retrieval(kinds["retrieval"], central, k) if kinds.get("retrieval") else None,
                "multiple_choice": _answers(kinds["mc"]) if kinds.get("mc") else None,
                "code": _code(kinds["code"]) if kinds.get("code") else None,
                "free_form": free_form or None,
                "abstention_calibration": summarise_calibration([r for rows in kinds.values() for r in rows])
                if kinds.get("calibration")
                else None,
                "routing_check": _routing_check(name, configs),
            }
        suites[suite] = summary
    return suites


def _routing_check(
    name: str, configs: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]
) -> dict[str, Any] | None:
    """The routing check of a ``fed-routed-*`` configuration against ``fed-all`` of its partition."""
    if not name.startswith("fed-routed-"):
        return None
    _, _, partition = name.partition("@")
    every = configs.get("fed-all" + (f"@{partition}" if partition else ""), {}).get("retrieval")
    routed = configs[name].get("retrieval")
    return routing_check(routed, every) if routed and every else None


def _fmt(figure: Mapping[str, float] | None, digits: int = 3) -> str:
    if not figure:
        return "–"
    return f"{figure['mean']:.{digits}f} [{figure['low']:.{digits}f}, {figure['high']:.{digits}f}]"


def _fmt_n(figure: Mapping[str, float] | None, digits: int = 2) -> str:
    return f"{_fmt(figure, digits)} ({figure['n']:g})" if figure else "–"


# (label, key in the free-form summary, digits): the rows of the before/after table.
FREE_FORM_METRICS = (
    ("well-formed (LLM answers)", "well_formed", 2),
    ("degenerate (loop, empty or cut by length)", "degenerate", 2),
    ("cites a source (answerable, sources retrieved)", "citation_rate", 2),
    ("cites a gold document (gold among the sources)", "gold_citation_rate", 2),
    ("supported claims (pooled; n = claims)", "supported_claims", 2),
    ("grounded answers (answerable)", "grounded", 2),
    ("abstention precision (n = abstentions)", "abstention_precision", 2),
    ("abstention recall (n = unanswerable)", "abstention_recall", 2),
    ("generate ms (mean)", "generate_ms", 0),
)


def _free_form_lines(summary: Mapping[str, Any]) -> list[str]:
    """The before (free) / after (structured) table of every configuration that answered free-form."""
    answering = [(name, f["free_form"]) for name, f in summary.items() if f.get("free_form")]
    if not answering:
        return []
    formats = sorted({fmt for _, by_format in answering for fmt in by_format}, key=lambda f: (f != "free", f))
    label = {"free": "free (before)", "structured": "structured (after)"}
    lines = [
        "",
        "### Free-form answers (before: the old free prompt and sampling; after: structured, the new default)",
        "",
        "Answerable retrieval questions (a seeded sample) and unanswerable ones (gold document in no silo), "
        "the same questions and retrieval for both formats. Cells: mean [95% interval] (n).",
        "",
        "| config | metric | " + " | ".join(label.get(f, f) for f in formats) + " |",
        "|---|---|" + "---|" * len(formats),
    ]
    for name, by_format in answering:
        counts = [by_format.get(f) or {} for f in formats]
        cells = [
            f"{c.get('answerable', 0)} + {c.get('unanswerable', 0)}; {c.get('gateway_abstained', 0)} abstained "
            f"by the gateway; {c.get('errors', 0)} errors"
            for c in counts
        ]
        lines.append(f"| {name} | answerable + unanswerable questions | " + " | ".join(cells) + " |")
        for text, key, digits in FREE_FORM_METRICS:
            lines.append(f"| {name} | {text} | " + " | ".join(_fmt_n(c.get(key), digits) for c in counts) + " |")
        reasons = [", ".join(f"{r} {n}" for r, n in (c.get("finish_reasons") or {}).items()) or "–" for c in counts]
        lines.append(f"| {name} | finish reasons | " + " | ".join(reasons) + " |")
    return lines


def _scores(distribution: Mapping[str, Any]) -> str:
    if "median" not in distribution:
        return f"{distribution['n']}: –"
    return f"{distribution['n']}: {distribution['p10']:.3f} / {distribution['median']:.3f} / {distribution['p90']:.3f}"


def _calibration_lines(summary: Mapping[str, Any]) -> list[str]:
    """The calibrated abstention thresholds and the best-score distributions behind them."""
    calibrated = [(name, f["abstention_calibration"]) for name, f in summary.items() if f.get("abstention_calibration")]
    if not calibrated:
        return []
    lines = [
        "",
        "### Abstention threshold (`abstain_below`, used by the structured answers)",
        "",
        "Calibrated on questions none of the answered ones is: the other retrieval questions (answerable) and "
        "held-out unanswerable ones. The highest recall of abstaining with precision at least "
        f"{calibrated[0][1]['min_precision']:g} (else the best F1). Best retrieval scores: n: p10 / median / p90.",
        "",
        "| config | abstain_below | rule | precision | recall | answerable (calibration) "
        "| unanswerable (calibration) | answerable (evaluated) | unanswerable (evaluated) |",
        "|---|---:|---|---:|---:|---|---|---|---|",
    ]
    for name, c in calibrated:
        threshold = "–" if c["threshold"] is None else f"{c['threshold']:.4f}"
        lines.append(
            f"| {name} | {threshold} | {c['rule']} | {_num(c['precision'])} | {_num(c['recall'])} "
            f"| {_scores(c['answerable'])} | {_scores(c['unanswerable'])} "
            f"| {_scores(c['evaluated_answerable'])} | {_scores(c['evaluated_unanswerable'])} |"
        )
    return lines


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _markdown(results: Mapping[str, Any], configs: Mapping[str, EvalConfig]) -> str:
    meta = results["run"]
    k = meta["options"]["k"]
    lines = [
        "# Evaluation report",
        "",
        f"{meta['finished']} on {meta['machine']}. LLM: `{meta['options']['llm_model']}` at {meta['llm']}. "
        f"Intervals are 95% bootstrap intervals; recall@{k}, nDCG@10 and overlap@{k} are per question means.",
        "",
    ]
    for suite, summary in results["suites"].items():
        info = meta["suites"].get(suite, {})
        lines += [f"## Suite `{suite}`", ""]
        if info:
            lines.append(
                f"{info['documents']} documents in the silos; {info['retrieval']} retrieval questions, "
                f"{info['multiple_choice']} multiple-choice questions, {info['code']} code problems"
                + (
                    f"; {info['unanswerable']} unanswerable questions and {info['calibration']} for calibration."
                    if info.get("unanswerable") or info.get("calibration")
                    else "."
                )
            )
            for reason in info.get("skipped", []):
                lines.append(f"- skipped: {reason}")
            lines.append("")
        lines += [
            f"### Retrieval (gold passages; overlap@{k} = share of the central exact top-{k} found)",
            "",
            f"| config | questions | recall@{k} | nDCG@10 | overlap@{k} vs central | silos asked (fraction) "
            "| silo recall | p50 search ms | bytes/question | epsilon spent per silo |",
            "|---|---:|---|---|---|---:|---:|---:|---:|---|",
        ]
        for name, figures in summary.items():
            r = figures["retrieval"]
            if not r:
                continue
            eps = ", ".join(f"{s} {v:g}" for s, v in r["epsilon_per_silo"].items()) or "–"
            lines.append(
                f"| {name} | {r['questions']} | {_fmt(r['recall@k'])} | {_fmt(r['ndcg@10'])} "
                f"| {_fmt(r['overlap@k_vs_central'])} | {_num(r['silos_asked'], 1)} ({_num(r['silo_fraction'])}) "
                f"| {_num(r['silo_recall'])} | {_num(r['latency_ms'].get('search', {}).get('p50'), 1)} "
                f"| {_num(r['bytes_per_question'], 0)} | {eps} |"
            )
        checks = [(n, f["routing_check"]) for n, f in summary.items() if f.get("routing_check")]
        if checks:
            lines += [
                "",
                f"**Routing check** (routers trained on document titles, tested on this suite's questions; target: "
                f"recall@{k} at least {ROUTING_TARGET_RECALL:g} of asking every silo, at most "
                f"{ROUTING_TARGET_CALLS:.0%} of its silo calls)",
                "",
                f"| config | recall@{k} vs every silo | silo calls vs every silo | target met |",
                "|---|---|---:|---|",
            ]
            for name, check in checks:
                lines.append(
                    f"| {name} | {_fmt(check['recall_ratio'])} | {check['call_fraction']:.2f} "
                    f"| {'yes' if check['met'] else 'no'} |"
                )
        answer_rows = [(n, f) for n, f in summary.items() if f["multiple_choice"] or f["code"]]
        if answer_rows:
            lines += [
                "",
                "### Answers (multiple choice: unparseable answers count as wrong; code: pass@1 in the sandbox)",
                "",
                "| config | MC questions | accuracy | unparseable | citation validity | pass@1 (problems) "
                "| p50 generate ms | prompt tokens |",
                "|---|---:|---|---:|---:|---|---:|---:|",
            ]
            for name, f in answer_rows:
                mc, code = f["multiple_choice"] or {}, f["code"] or {}
                generate = (mc.get("latency_ms") or {}).get("generate", {}).get("p50")
                lines.append(
                    f"| {name} | {mc.get('questions', 0)} | {_fmt(mc.get('accuracy'))} | {mc.get('unparseable', 0)} "
                    f"| {_num(mc.get('citation_validity'))} | {_fmt(code.get('pass@1'))} ({code.get('problems', 0)}) "
                    f"| {_num(generate, 0)} | {_num(mc.get('prompt_tokens'), 0)} |"
                )
        lines += _free_form_lines(summary)
        lines += _calibration_lines(summary)
        lines += ["", "### Latency per step (p50 / p95 ms, retrieval questions)", ""]
        lines += ["| config | " + " | ".join(STEPS[:4]) + " |", "|---|" + "---:|" * 4]
        for name, figures in summary.items():
            r = figures["retrieval"]
            if not r:
                continue
            cells = [
                f"{_num(r['latency_ms'][s]['p50'], 1)} / {_num(r['latency_ms'][s]['p95'], 1)}"
                if s in r["latency_ms"]
                else "–"
                for s in STEPS[:4]
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## What each configuration was", ""]
    lines += [f"- `{name}`: {config.describe()}" for name, config in configs.items()]
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in meta.get("plots", [])) or "none", ""]
    return "\n".join(lines)


def write_report(out: Path, rows: Iterable[Mapping[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``results.json``, ``report.md`` and the plots into ``out``; return the results."""
    from eval.plots import write_plots

    rows = list(rows)
    k = int(meta["options"]["k"])
    suites = summarise(rows, k=k)
    configs = {c.name: c for c in standard_configs() if any(c.name in s for s in suites.values())}
    results: dict[str, Any] = {"run": dict(meta), "suites": suites}
    results["run"]["machine"] = meta.get("machine") or f"{platform.node()} ({platform.machine()})"
    results["run"]["plots"] = write_plots(out, suites)
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False), encoding="utf-8")
    (out / "report.md").write_text(_markdown(results, configs), encoding="utf-8")
    return results
