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
  a quarter of each token's epsilon for the sparse-vector test and three quarters for the vote.

    python bench/bench_dp_answers.py --questions 60 --epsilons 1,2,5,10,20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aggregation import ScoreMerger
from eval.builder import build_federation, serve_silos
from eval.partition import natural_source
from eval.suites import load_suite
from federation.config import DPAnswerSettings, RetrievalSettings
from federation.encoder import SentenceTransformerEncoder
from federation.identity import Identity
from federation.signing import RequestSigner
from gateway.dp_answer import DPAnswerer, answer_messages
from gateway.fanout import SiloPool
from gateway.llm_server import EmbeddedLLMServer
from gateway.privacy_ledger import PrivacyLedger
from gateway.token_client import LlamaCppTokens

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


async def greedy(tokens: LlamaCppTokens, question: str, passages: list, max_tokens: int) -> str:
    """The model's greedy answer, with ``passages`` in its prompt as a DP voter would have them (no privacy)."""
    prompt = await tokens.chat_prompt(answer_messages(question, None, passages))
    end = {ids[0] for text in ("<|im_end|>", "<|endoftext|>") if len(ids := await tokens.tokenize(text)) == 1}
    out: list[int] = []
    for _ in range(max_tokens):
        token = (await tokens.next_tokens(prompt + out, 1))[0].id
        if token in end:
            break
        out.append(token)
    return await tokens.detokenize(out) if out else ""


async def main_async(args: argparse.Namespace) -> None:
    data = load_suite(
        "medical", retrieval_limit=args.questions * 2, mc_limit=0, code_limit=0, docs_per_corpus=args.docs_per_corpus
    )
    titles = {d.doc_id: d.title for d in data.documents}
    gold_title = {q.id: " / ".join(titles[d] for d in sorted(q.gold_doc_ids) if d in titles) for q in data.retrieval}
    questions = [q for q in data.retrieval if new_words(q.question, gold_title[q.id])][: args.questions]
    parts: dict[str, list] = {}
    for doc in data.documents:
        parts.setdefault(natural_source(doc), []).append(doc)
    encoder = SentenceTransformerEncoder()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedLLMServer(port=0, ctx=2048, parallel=args.voters + 1) as llm:
        root = Path(tmp)
        federation = build_federation(root / "fed", parts, encoder)
        tokens = LlamaCppTokens(llm.base_url)
        async with serve_silos(federation, encoder=encoder) as (membership, transports):
            identity = Identity.load(federation.gateway_key_file)
            pool = SiloPool(membership, RequestSigner(identity), RetrievalSettings(), transports=transports)
            await pool.refresh_cards(force=True)
            vectors = encoder.encode([q.question for q in questions])
            results: dict[str, list[bool]] = {"no-rag": [], "rag": []}
            paid: dict[str, list[int]] = {}
            answerers = {}
            for eps in epsilons:
                settings = DPAnswerSettings(
                    enabled=True,
                    voters=args.voters,
                    passages_per_voter=args.passages_per_voter,
                    max_paid_tokens=args.max_paid,
                    epsilon_test=eps / args.max_paid / 4,
                    epsilon_token=eps / args.max_paid * 3 / 4,
                    max_tokens=args.max_tokens,
                    document_budget=eps,
                )
                ledger = PrivacyLedger(root / f"ledger-{eps:g}.db", budget=eps)
                answerers[eps] = DPAnswerer(
                    settings, tokens=tokens, ledger=ledger, rng=np.random.default_rng(args.seed)
                )
                results[f"dp@{eps:g}"], paid[f"dp@{eps:g}"] = [], []
            started = time.perf_counter()
            for n, (q, vector) in enumerate(zip(questions, vectors, strict=True), start=1):
                gold = new_words(q.question, gold_title[q.id])
                results["no-rag"].append(names_the_term(await greedy(tokens, q.question, [], args.max_tokens), gold))
                outcomes = await pool.search(pool.names, vector, args.passages_per_voter)
                top = ScoreMerger().merge(
                    {o.silo: o.passages for o in outcomes if o.status == "ok"}, args.passages_per_voter
                )
                results["rag"].append(names_the_term(await greedy(tokens, q.question, top, args.max_tokens), gold))
                for eps, answerer in answerers.items():
                    reading = await answerer.read(pool, pool.names, vector)
                    answer = await answerer.answer(q.question, reading)
                    results[f"dp@{eps:g}"].append(names_the_term(answer.text, gold))
                    paid[f"dp@{eps:g}"].append(answer.paid_tokens)
                if n % 10 == 0:
                    print(f"  {n}/{len(questions)} questions, {time.perf_counter() - started:.0f} s", flush=True)
            await pool.aclose()
        await tokens.aclose()
    print(
        f"\n## DP answers vs no-RAG and RAG ({len(questions)} medical synonym questions, {args.voters} voters x "
        f"{args.passages_per_voter} passages, {args.max_paid} paid tokens, one answer per document)"
    )
    print("| config | answer names the gold term | paid tokens (mean) |")
    print("|---|---|---:|")
    for name, hits in results.items():
        mean, low, high = interval(hits, rng)
        spent = f"{statistics.mean(paid[name]):.2f}" if name in paid else "-"
        print(f"| {name} | {mean:.3f} [{low:.3f}, {high:.3f}] | {spent} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--docs-per-corpus", type=int, default=300)
    parser.add_argument(
        "--epsilons", default="1,2,5,10,20", help="Epsilon per document (= per answer), comma-separated."
    )
    parser.add_argument("--voters", type=int, default=4)
    parser.add_argument("--passages-per-voter", type=int, default=2)
    parser.add_argument("--max-paid", type=int, default=2, help="Paid tokens per DP answer.")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
