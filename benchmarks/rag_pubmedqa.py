"""PubMedQA-L accuracy by likelihood (yes / no / maybe) of a kit LM with no context, with context retrieved from a document store,
and with the gold abstract, beside the chance and majority baselines.

    SMA_DATA_DIR=../shared/data python benchmarks/rag_pubmedqa.py --model_dirs DIR[,DIR2] [--split test] [--top_k 3]

Items are the kit's PubMedQA items (`sma_kit.qa_eval.read_pubmedqa`: the 500 test questions, or all 1,000) scored by
`sma_kit.qa_eval.eval_mc` (the option with the highest log-likelihood; `accuracy_norm` divides by the option's bytes):
- `none`: `Question: Q\\nAnswer:`;
- `retrieved`: `RAGModel(store, lm).mc_items(items, top_k)`: the `top_k` chunks BM25 finds for the question in a store of the
  1,000 abstracts split by paragraph (the store of benchmarks/retrieval_bench.py), fitted into the model's window;
- `gold`: the kit's own prompt `Abstract: CONTEXT\\nQuestion: Q\\nAnswer:` (the model keeps the last window's tokens).
`accuracy_centered` takes each option's log-likelihood relative to its mean over the items (label-free), which shows whether the
context moves the answer when a small model prefers one option whatever the prompt.
Writes benchmarks/results/rag_pubmedqa.json.
"""
import json, math, sys, time
from collections import Counter
from pathlib import Path
from fastcore.script import call_parse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, data_dir, write, RESULTS
from retrieval_bench import pubmedqa, pubmedqa_store, load, git_commit
from sma_kit.qa_eval import read_pubmedqa, eval_mc, mc_baselines
from sma_kit.generate import load_lm
from sma_kit.rag import RAGModel


def model_info(d: Path) -> dict:
    "The model's shape, size and how it was trained (from its config.json and metrics.jsonl)."
    cfg = json.loads((d / "config.json").read_text())
    info = dict(dir=d.name, config=cfg)
    m = d / "metrics.jsonl"
    if m.is_file():
        rows = [json.loads(l) for l in m.read_text().splitlines() if l.strip()]
        vals = [r for r in rows if "val_loss" in r]
        info.update(steps=max((r.get("step", 0) for r in rows), default=0),
                    last_val=dict(step=vals[-1]["step"], val_loss=round(vals[-1]["val_loss"], 4)) if vals else None,
                    best_val_loss=round(min(r["val_loss"] for r in vals), 4) if vals else None)
    return info


def centered_accuracy(examples: list[dict]) -> float:
    """Accuracy when each option's log-likelihood is taken relative to its mean over all the items (no labels used): a model that
    prefers one answer whatever the prompt is then judged by how the prompt moves the options, not by that preference."""
    labels = list(examples[0]["loglik"])
    mean = {l: sum(e["loglik"][l] for e in examples) / len(examples) for l in labels}
    return sum(max(labels, key=lambda l: e["loglik"][l] - mean[l]) == e["gold"] for e in examples) / len(examples)


def summary(r: dict) -> dict:
    "Accuracy with its standard error, the label-free centred accuracy and the predicted-label counts (the examples dropped)."
    n, acc, ex = r["n"], r["accuracy"], r["examples"]
    return dict(n=n, accuracy=round(acc, 4), accuracy_norm=round(r["accuracy_norm"], 4),
                stderr=round(math.sqrt(acc * (1 - acc) / n), 4) if n else None,
                accuracy_centered=round(centered_accuracy(ex), 4) if n else None,
                predictions=dict(Counter(e["prediction"] for e in ex)), predictions_norm=dict(Counter(e["prediction_norm"] for e in ex)))


@call_parse
def main(
    model_dirs:str=None,    # comma-separated kit model dirs (generalist, shiftable, router)
    split:str="test",       # PubMedQA-L questions: test (500) or all (1,000)
    top_k:int=3,            # chunks retrieved per question
    sample:int=0,           # score only the first N questions (0: all; for a quick check)
    batch_size:int=16,      # log-likelihood batch
    out:str="rag_pubmedqa", # results file name under benchmarks/results
):
    "PubMedQA accuracy by likelihood with no, retrieved and gold context; writes benchmarks/results/OUT.json."
    if not model_dirs: sys.exit("give --model_dirs DIR[,DIR2]")
    root = data_dir()
    items = read_pubmedqa(split, root)
    if sample: items = items[:sample]
    docs, _ = pubmedqa(root)
    store, _ = pubmedqa_store(docs, "bm25")
    hits = [store.search_docs(it["question"], top_k) for it in items]
    res = dict(machine=machine(), git_commit=git_commit(), split=split, n_items=len(items), top_k=top_k, retriever="bm25",
               store=dict(documents=len(store.docs), chunks=len(store)), baselines=mc_baselines(items),
               gold_abstract_retrieved=dict(top1=round(sum(h[:1] == [it["id"]] for h, it in zip(hits, items)) / len(items), 4),
                                            top_k=round(sum(it["id"] in h for h, it in zip(hits, items)) / len(items), 4)),
               models={})
    print({k: v for k, v in res.items() if k != "machine"}, flush=True)
    for d in map(Path, model_dirs.split(",")):
        lm = load_lm(d, batch_size=batch_size)
        rag = RAGModel(store, lm)
        ctx = [rag.context(it["question"], top_k, max(len(lm.tok.encode(" " + o)) for o in it["options"])) for it in items]
        conds = dict(none=[{**it, "prompt": f"Question: {it['question']}\nAnswer:"} for it in items],
                     retrieved=rag.mc_items(items, top_k),
                     gold=items)
        m = dict(model=model_info(d), window=lm.window,
                 retrieved_context=dict(mean_prompt_tokens=round(sum(c["prompt_tokens"] for c in ctx) / len(ctx), 1),
                                        truncated=round(sum(c["truncated"] for c in ctx) / len(ctx), 4),
                                        mean_chunks_kept=round(sum(len(c["sources"]) for c in ctx) / len(ctx), 2),
                                        first_chunk_from_gold=round(sum(bool(c["sources"]) and c["sources"][0]["doc"] == it["id"]
                                                                        for c, it in zip(ctx, items)) / len(items), 4)),
                 conditions={})
        for name, its in conds.items():
            t0, l0 = time.perf_counter(), load()
            r = summary(eval_mc(lm, its))
            m["conditions"][name] = {**r, "seconds": round(time.perf_counter() - t0, 1), "load_before": l0, "load_after": load()}
            print(d.name, name, m["conditions"][name], flush=True)
        res["models"][d.name] = m
        prev = RESULTS / f"{out}.json"  # models scored earlier (or by a run alongside) under the same settings stay in the file
        p = json.loads(prev.read_text()) if prev.is_file() else {}
        if all(p.get(k) == res[k] for k in ("split", "n_items", "top_k", "retriever")):
            res["models"] = {**p.get("models", {}), **res["models"]}
        write(out, res)
