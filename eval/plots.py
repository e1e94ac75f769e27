"""PNG plots of a run's summary (matplotlib, headless).

- ``recall_vs_silos.png``: recall@k against the fraction of silos asked, one point per
  federated configuration, per suite (routers move left; the target is to stay high).
- ``accuracy.png``: multiple-choice accuracy per configuration with its 95% interval.
- ``latency.png``: median time per step (embed, route, search, aggregate, generate).
- ``answer_quality.png``: the free-form answer rates with their 95% intervals, free (before)
  and structured (after) side by side, per suite and answering configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_plots"]

_STEPS = ("embed", "route", "search", "aggregate", "generate")
_ANSWER_RATES = (
    ("well_formed", "well-formed"),
    ("degenerate", "degenerate"),
    ("citation_rate", "cites"),
    ("gold_citation_rate", "cites gold"),
    ("supported_claims", "supported claims"),
    ("abstention_precision", "abstention P"),
    ("abstention_recall", "abstention R"),
)
_FORMAT_COLOURS = {"free": "#c44e52", "structured": "#4c72b0"}


def write_plots(out: Path, suites: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Write the plots for ``suites`` (from :func:`eval.report.summarise`); return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    names = list(suites)
    if not names:
        return written

    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, suite in zip(axes[0], names, strict=True):
        for config, figures in suites[suite].items():
            r = figures.get("retrieval")
            if not r or r["silo_fraction"] is None or not r["recall@k"]:
                continue
            x, y = r["silo_fraction"], r["recall@k"]["mean"]
            ax.errorbar(x, y, yerr=[[y - r["recall@k"]["low"]], [r["recall@k"]["high"] - y]], fmt="o", capsize=3)
            ax.annotate(config, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("fraction of silos asked")
        ax.set_ylabel("recall@k (gold passages)")
        ax.set_xlim(0, 1.08)
        ax.set_title(f"{suite}: recall vs silos asked")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "recall_vs_silos.png", dpi=110)
    plt.close(fig)
    written.append("recall_vs_silos.png")

    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, suite in zip(axes[0], names, strict=True):
        labels, means, lows, highs = [], [], [], []
        for config, figures in suites[suite].items():
            mc = figures.get("multiple_choice")
            if not mc or not mc["accuracy"]:
                continue
            acc = mc["accuracy"]
            labels.append(config)
            means.append(acc["mean"])
            lows.append(acc["mean"] - acc["low"])
            highs.append(acc["high"] - acc["mean"])
        if labels:
            ax.bar(range(len(labels)), means, yerr=[lows, highs], capsize=4, color="#4c72b0")
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("multiple-choice accuracy")
        ax.set_title(f"{suite}: accuracy (95% interval)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)
    written.append("accuracy.png")

    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, suite in zip(axes[0], names, strict=True):
        configs = list(suites[suite])
        bottoms = [0.0] * len(configs)
        for step in _STEPS:
            heights = []
            for config in configs:
                figures = suites[suite][config]
                part = figures.get("multiple_choice") or figures.get("retrieval") or {}
                heights.append(float((part.get("latency_ms") or {}).get(step, {}).get("p50", 0.0)))
            if any(heights):
                ax.bar(range(len(configs)), heights, bottom=bottoms, label=step)
                bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        ax.set_xticks(range(len(configs)), configs, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("median ms per question")
        ax.set_title(f"{suite}: latency per step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    written.append("latency.png")
    if _answer_quality(plt, out, suites):
        written.append("answer_quality.png")
    return written


def _answer_quality(plt: Any, out: Path, suites: Mapping[str, Mapping[str, Any]]) -> bool:
    """Grouped bars per answer rate, one bar per format; False when no configuration answered free-form."""
    panels = [
        (suite, config, figures["free_form"])
        for suite, configs in suites.items()
        for config, figures in configs.items()
        if figures.get("free_form")
    ]
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    for ax, (suite, config, by_format) in zip(axes[:, 0], panels, strict=True):
        formats = sorted(by_format, key=lambda f: (f != "free", f))
        width = 0.8 / len(formats)
        for i, fmt in enumerate(formats):
            xs, means, lows, highs = [], [], [], []
            for x, (key, _) in enumerate(_ANSWER_RATES):
                figure = by_format[fmt].get(key)
                if not figure:
                    continue
                xs.append(x - 0.4 + width * (i + 0.5))
                means.append(figure["mean"])
                lows.append(figure["mean"] - figure["low"])
                highs.append(figure["high"] - figure["mean"])
            label = {"free": "free (before)", "structured": "structured (after)"}.get(fmt, fmt)
            ax.bar(xs, means, width, yerr=[lows, highs], capsize=3, label=label, color=_FORMAT_COLOURS.get(fmt))
        ax.set_xticks(range(len(_ANSWER_RATES)), [text for _, text in _ANSWER_RATES], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("rate (95% interval)")
        ax.set_title(f"{suite} / {config}: free-form answers")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "answer_quality.png", dpi=110)
    plt.close(fig)
    return True
