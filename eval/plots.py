"""PNG plots of a run's summary (matplotlib, headless).

- ``recall_vs_silos.png``: recall@k against the fraction of silos asked, one point per
  federated configuration, per suite (routers move left; the target is to stay high).
- ``accuracy.png``: multiple-choice accuracy per configuration with its 95% interval.
- ``latency.png``: median time per step (embed, route, search, aggregate, generate).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_plots"]

_STEPS = ("embed", "route", "search", "aggregate", "generate")


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
    return written
