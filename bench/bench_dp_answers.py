"""Red team 4, utility vs privacy: what DP answers keep of retrieval's help, per epsilon per document.

Medical suite (ontology silos), synonym questions ("What is <synonym>?") whose gold document is the
term: an answer that names the term (every word of the gold title that the question lacks appears
in it; questions whose synonym already holds every word of the term are left out) could only come
from the passages. Side by side in one run, on the same questions and federation (real silos in
process, the real encoder, the embedded LLM):

- ``no-rag``: the model alone (the DP answer's free model, greedy).
- ``rag``: the same model reading the best ``passages_per_voter`` passages of all silos (no privacy).
- ``dp@E``: DP answers (:mod:`gateway.dp_answer`) costing ``E`` per document read, each document
  read by one answer at most (its lifetime budget is ``E``): ``max_paid_tokens`` paid tokens,
  ``--test-share`` of each token's epsilon for the sparse-vector test (a quarter), the rest for the vote.

A DP answer can only use what several documents say: the voters read disjoint shards, so a
term that one document holds reaches one voter, and the vote is built to hide exactly that.
``--copies R`` measures the other case, knowledge several silos hold: each question's gold
document is also ingested, unchanged, by R - 1 other silos (as when several hospitals hold the
same reference text); the copies fall into the voters' shards independently.

    python bench/bench_dp_answers.py --questions 60 --epsilons 1,2,5,10,20
    python bench/bench_dp_answers.py --questions 40 --epsilons 1,2,5,10,20 --copies 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aggregation import ScoreMerger
from aggregation.validation import Passage
from eval.builder import build_federation, serve_silos
from eval.datasets.base import MultipleChoiceQuestion
from eval.partition import natural_source
from eval.suites import SuiteData, load_suite
from federation.config import DPAnswerSettings, RetrievalSettings
from federation.encoder import SentenceTransformerEncoder
from federation.identity import Identity
from federation.signing import RequestSigner
from gateway.dp_answer import DPAnswerer, answer_messages
from gateway.fanout import SiloPool
from gateway.llm_server import EmbeddedLLMServer
from gateway.privacy_ledger import PrivacyLedger
from gateway.prompting import read_choice
from gateway.token_client import LlamaCppTokens
from silo_node.ingest.readers import SourceDocument

_WORD = re.compile(r"[a-z0-9]+")


def new_words(question: str, title: str) -> set[str]:
    """The gold title's words that the question does not already hold (what only a passage tells)."""
    return set(_WORD.findall(title.lower())) - set(_WORD.findall(question.lower()))


def names_the_term(answer: str, novel: set[str]) -> bool:
    """Every word of the gold term that the question lacks is in the answer (case-insensitive)."""
    return novel <= set(_WORD.findall(answer.lower()))


def interval(hits: list[bool], rng: np.random.Generator, rounds: int = 2000) -> tuple[float, float, float]:
    values = np.array(hits, dtype=np.float64)
    means = [float(values[rng.integers(0, len(values), len(values))].mean()) for _ in range(rounds)]
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


async def greedy(
    tokens: LlamaCppTokens, question: str, choices: Sequence[str] | None, passages: Sequence[Passage], max_tokens: int
) -> str:
    """The model's greedy answer, with ``passages`` in its prompt as a DP voter would have them (no privacy)."""
    prompt = await tokens.chat_prompt(answer_messages(question, choices, passages))
    end = {ids[0] for text in ("<|im_end|>", "<|endoftext|>") if len(ids := await tokens.tokenize(text)) == 1}
    out: list[int] = []
    for _ in range(max_tokens):
        token = (await tokens.next_tokens(prompt + out, 1))[0].id
        if token in end:
            break
        out.append(token)
    return await tokens.detokenize(out) if out else ""


@dataclass(frozen=True)
class Case:
    """One question of a task and how its answer is judged."""

    task: str
    question: str
    choices: tuple[str, ...] | None
    correct: Callable[[str], bool]
    gold_doc_ids: frozenset[str] = frozenset()


def term_cases(data: SuiteData, limit: int) -> list[Case]:
    """Synonym questions whose gold title has words the question lacks; right if the answer names them all."""
    titles = {d.doc_id: d.title for d in data.documents}
    cases = []
    for q in data.retrieval:
        novel = new_words(q.question, " / ".join(titles[d] for d in sorted(q.gold_doc_ids) if d in titles))
        if novel:
            cases.append(Case("term", q.question, None, partial(names_the_term, novel=novel), q.gold_doc_ids))
    return cases[:limit]


def right_letter(answer: str, question: MultipleChoiceQuestion) -> bool:
    """The answer's letter (read as the gateway reads it) is the right one."""
    return read_choice(answer, False, question.choices) == question.answer_letter


def mc_cases(data: SuiteData) -> list[Case]:
    """The suite's multiple-choice questions."""
    return [Case("mc", q.question, q.choices, partial(right_letter, question=q)) for q in data.multiple_choice]


async def main_async(args: argparse.Namespace) -> None:
    data = load_suite(
        "medical",
        retrieval_limit=args.questions * 2,
        mc_limit=args.mc,
        code_limit=0,
        docs_per_corpus=args.docs_per_corpus,
    )
    terms = term_cases(data, args.questions)
    cases = terms + mc_cases(data)
    parts: dict[str, list[SourceDocument]] = {}
    for doc in data.documents:
        parts.setdefault(natural_source(doc), []).append(doc)
    shared = {d for case in terms for d in case.gold_doc_ids}
    if args.copies > len(parts):
        raise SystemExit(f"--copies {args.copies}: the suite has only {len(parts)} silos")
    by_id = {d.doc_id: d for d in data.documents}
    for doc_id in sorted(shared & by_id.keys()) if args.copies > 1 else ():
        home = natural_source(by_id[doc_id])
        others = sorted(name for name in parts if name != home)
        draw = np.random.default_rng([args.seed, zlib.crc32(doc_id.encode())])
        for i in draw.permutation(len(others))[: args.copies - 1]:
            parts[others[i]].append(by_id[doc_id])
    encoder = SentenceTransformerEncoder()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    rng = np.random.default_rng(args.seed)
    configs = ["no-rag", "rag"] + [f"dp@{eps:g}" for eps in epsilons]
    results: dict[tuple[str, str], list[bool]] = {}
    paid: dict[tuple[str, str], list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedLLMServer(port=0, ctx=2048, parallel=args.voters + 1) as llm:
        root = Path(tmp)
        federation = build_federation(root / "fed", parts, encoder)
        tokens = LlamaCppTokens(llm.base_url)
        async with serve_silos(federation, encoder=encoder) as (membership, transports):
            identity = Identity.load(federation.gateway_key_file)
            pool = SiloPool(membership, RequestSigner(identity), RetrievalSettings(), transports=transports)
            await pool.refresh_cards(force=True)
            vectors = encoder.encode([c.question for c in cases])
            answerers = {}  # one per task and epsilon, each with its own ledger
            for task in dict.fromkeys(c.task for c in cases):
                for eps in epsilons:
                    settings = DPAnswerSettings(
                        enabled=True,
                        voters=args.voters,
                        passages_per_voter=args.passages_per_voter,
                        max_paid_tokens=args.max_paid,
                        epsilon_test=eps / args.max_paid * args.test_share,
                        epsilon_token=eps / args.max_paid * (1 - args.test_share),
                        threshold=args.threshold,
                        domain=args.domain,
                        max_tokens=args.max_tokens,
                        document_budget=eps,
                    )
                    ledger = PrivacyLedger(root / f"ledger-{task}-{eps:g}.db", budget=eps)
                    answerers[task, eps] = DPAnswerer(
                        settings, tokens=tokens, ledger=ledger, rng=np.random.default_rng(args.seed)
                    )
            started = time.perf_counter()
            for n, (case, vector) in enumerate(zip(cases, vectors, strict=True), start=1):

                def record(config: str, text: str, case: Case = case) -> None:
                    results.setdefault((case.task, config), []).append(case.correct(text))

                no_rag = await greedy(tokens, case.question, case.choices, [], args.max_tokens)
                record("no-rag", no_rag)
                outcomes = await pool.search(pool.names, vector, args.passages_per_voter)
                top = ScoreMerger().merge(
                    {o.silo: o.passages for o in outcomes if o.status == "ok"}, args.passages_per_voter
                )
                record("rag", await greedy(tokens, case.question, case.choices, top, args.max_tokens))
                for eps in epsilons:
                    answerer = answerers[case.task, eps]
                    reading = await answerer.read(pool, pool.names, vector)
                    answer = await answerer.answer(case.question, reading, choices=case.choices)
                    record(f"dp@{eps:g}", answer.text)
                    paid.setdefault((case.task, f"dp@{eps:g}"), []).append(answer.paid_tokens)
                    if args.show:
                        print(f"    {case.task} dp@{eps:g} paid {answer.paid_tokens}: {answer.text!r}", flush=True)
                if n % 10 == 0:
                    print(f"  {n}/{len(cases)} questions, {time.perf_counter() - started:.0f} s", flush=True)
            await pool.aclose()
        await tokens.aclose()
    print(
        f"\n## DP answers vs no-RAG and RAG (medical suite, {args.voters} voters x {args.passages_per_voter} "
        f"passages, {args.max_paid} paid tokens, each document read by one answer at most, "
        f"{args.copies} cop{'y' if args.copies == 1 else 'ies'} of each gold document)"
    )
    tasks = {"term": "synonym questions: the answer names the gold term", "mc": "multiple choice: accuracy"}
    present = [t for t in tasks if any(task == t for task, _ in results)]
    print("| config | " + " | ".join(f"{tasks[t]} (n={len(results[t, 'rag'])})" for t in present) + " | paid tokens |")
    print("|---|" + "---|" * len(present) + "---:|")
    for config in configs:
        cells = []
        for task in present:
            mean, low, high = interval(results[task, config], rng)
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
        spent = [p for task in present for p in paid.get((task, config), [])]
        print(f"| {config} | " + " | ".join(cells) + (f" | {statistics.mean(spent):.2f} |" if spent else " | - |"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=60, help="Synonym questions.")
    parser.add_argument("--mc", type=int, default=0, help="Multiple-choice questions of the suite (MedMCQA/MMLU).")
    parser.add_argument("--docs-per-corpus", type=int, default=300)
    parser.add_argument(
        "--epsilons", default="1,2,5,10,20", help="Epsilon per document (= per answer), comma-separated."
    )
    parser.add_argument("--voters", type=int, default=4)
    parser.add_argument("--passages-per-voter", type=int, default=2)
    parser.add_argument("--max-paid", type=int, default=2, help="Paid tokens per DP answer.")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument(
        "--test-share", type=float, default=0.25, help="Share of each paid token's epsilon for the sparse-vector test."
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="Disagreeing voters before a token is paid (default: half)."
    )
    parser.add_argument("--domain", type=int, default=20, help="Tokens a vote ranges over (the free model's top).")
    parser.add_argument("--show", action="store_true", help="Print every DP answer.")
    parser.add_argument(
        "--copies", type=int, default=1, help="Silos holding each gold document (1: its own silo only)."
    )
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
