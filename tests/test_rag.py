"""Tests for sma_kit.split, sma_kit.retrieval and sma_kit.rag: splitters, the document store (bm25, sentence-transformers,
hybrid, faiss), save/load, retrieval metrics, RAG prompt fitting and the `sma_rag` command.

The sentence-transformers checks use a tiny BERT built here, offline, with random weights (two seeds: two different embedders).
They are skipped only when sentence-transformers is not installed; faiss checks only when faiss is not installed.
"""
import json, math, os, random, re, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pytest
from conftest import one_error_line

from sma_kit.config import SmaError
from sma_kit.split import split_text, METHODS
from sma_kit.retrieval import (DocumentStore, DenseRetriever, Embedder, make_retriever, rrf, query_metrics, retrieval_metrics,
                               faiss_available, read_queries, evaluate_store)
from sma_kit.rag import RAGModel, fit_context, rag_prompt

BIN = Path(sys.executable).parent
has_st = pytest.mark.skipif(__import__("importlib.util").util.find_spec("sentence_transformers") is None,
                            reason="sentence-transformers is not installed (pip install 'sma_kit[st]')")
has_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed (pip install 'sma_kit[faiss]')")


def rag_cli(*args, timeout=600):
    "Run sma_rag (the console script if installed, else the same entry point)."
    exe = BIN / "sma_rag"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from sma_kit.rag import sma_rag_main; sys.exit(sma_rag_main())"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)


def word_vocab(seed=0):
    "1500 pseudo-words of three syllables."
    rng = random.Random(seed)
    return sorted({"".join(rng.choice("bcdfghjklmnprstvz") + rng.choice("aeiou") for _ in range(3)) for _ in range(1500)})


def word_corpus(n_docs=60, seed=0):
    "Documents of three paragraphs of random pseudo-words (distinct enough that every chunk is unique)."
    rng, vocab = random.Random(seed), word_vocab()
    sent = lambda: " ".join(rng.choice(vocab) for _ in range(9)).capitalize() + "."
    return {f"doc{i:03d}.txt": "\n\n".join(" ".join(sent() for _ in range(2)) for _ in range(3)) for i in range(n_docs)}


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    "Two tiny sentence-transformers models (same architecture, different random weights), built offline."
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    import torch
    from tokenizers import Tokenizer, models as tk_models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast
    from sentence_transformers import SentenceTransformer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers import models
    root = tmp_path_factory.mktemp("st")
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *word_vocab(), *letters, *("##" + c for c in letters)]
    out = []
    for seed in (0, 1):
        hf = root / f"hf{seed}"; hf.mkdir()
        tk = Tokenizer(tk_models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
        tk.normalizer, tk.pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
        tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                      mask_token="[MASK]", model_max_length=256)
        assert "[UNK]" not in tok.tokenize("Lobuhe mijako.") or "lobuhe" not in vocab
        torch.manual_seed(seed)
        BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=256, initializer_range=0.5)).save_pretrained(hf)
        tok.save_pretrained(hf)
        st = SentenceTransformer(modules=[models.Transformer(str(hf), max_seq_length=256), models.Pooling(32, "mean"), models.Normalize()],
                                 device="cpu")
        st.save(str(root / f"st{seed}"))
        out.append(root / f"st{seed}")
    return out


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    docs = word_corpus()
    for name, text in docs.items(): (d / name).write_text(text)
    return d, docs


# ---------------------------------------------------------------- splitting

CRAFTED = ("Title\n=====\n\nThe first section opens here. It has a second sentence! And a third?\n\n"
           "## Markdown part\n\nA paragraph with e.g. an abbreviation. Dr. Who agrees.\n\n   \n\n"
           "1. Plain numbered heading\n\n" + "Long sentence without end " * 12 + "\n\nRESULTS\n\nShort.\n")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("opts", [dict(), dict(max_length=60), dict(min_length=40, max_length=120), dict(max_length=80, overlap=20)])
def test_spans_reconstruct_the_source(method, opts):
    ch = split_text(CRAFTED, method, pattern=r"\n\n" if method == "regex" else None, source="x.md", **opts)
    assert ch, (method, opts)
    for c in ch:
        assert c.text == CRAFTED[c.start:c.end] and c.source == "x.md" and c.text.strip()
        if opts.get("max_length"): assert len(c.text) <= opts["max_length"], (method, opts, c)
    assert [c.start for c in ch] == sorted(c.start for c in ch)
    if opts.get("overlap"):                                    # each chunk repeats the tail of the previous one
        assert all(b.start < a.end for a, b in zip(ch, ch[1:]) if b.start - a.start >= opts["overlap"]), ch
    if method != "chunk":                                      # nothing but whitespace (and regex separators) is left out
        covered = set().union(*(range(c.start, c.end) for c in ch))
        lost = "".join(CRAFTED[i] for i in range(len(CRAFTED)) if i not in covered)
        assert not lost.strip(), (method, opts, lost)


def test_semantic_splits_headings_of_three_formats():
    first = [c.text.splitlines()[0] for c in split_text(CRAFTED, "semantic")]
    assert first == ["Title", "## Markdown part", "1. Plain numbered heading", "RESULTS"], first


def test_chunk_windows_overlap_exactly():
    ch = split_text("abcdefghij" * 10, "chunk", max_length=30, overlap=10)
    assert [(c.start, c.end) for c in ch] == [(0, 30), (20, 50), (40, 70), (60, 90), (80, 100)]
    assert all(a.text[-10:] == b.text[:10] for a, b in zip(ch, ch[1:]))


def test_bad_split_options_are_one_line():
    for kw, msg in [(dict(method="regex", pattern="[a-"), "bad regex pattern '[a-'"), (dict(method="lines"), "unknown split method"),
                    (dict(method="chunk", max_length=None), "needs max_length"), (dict(method="regex"), "needs a pattern")]:
        with pytest.raises(SmaError, match=re.escape(msg)) as e: split_text("some text", **kw)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------- store: bm25

def test_chunk_finds_itself_first_bm25(corpus_dir):
    d, docs = corpus_dir
    st = DocumentStore("bm25", split="sentence")
    st.add(d)
    assert len(st.docs) == len(docs) and len(st) == 6 * len(docs)
    for i in range(0, len(st), 7):
        c = st.chunks[i]
        top = st.search(c["text"], 3)[0]
        assert top["chunk"] == i and docs[top["doc"]][top["start"]:top["end"]] == c["text"]


def test_chunk_finds_itself_first_pubmedqa(data_dir):
    "Real abstracts: a sentence used as the query comes back first (identical duplicates count)."
    pq = json.loads((data_dir / "medical" / "pubmedqa" / "ori_pqal.json").read_text())
    st = DocumentStore("bm25", split="sentence")
    for pid in list(pq)[:150]: st.add_text("\n\n".join(pq[pid]["CONTEXTS"]), pid)
    sample = [c for c in st.chunks if len(c["text"].split()) >= 8][::25]
    assert len(sample) >= 40
    for c in sample: assert st.search(c["text"], 1)[0]["text"] == c["text"], c["text"]


def test_save_load_identical_and_remove(corpus_dir, tmp_path):
    d, docs = corpus_dir
    st = DocumentStore("bm25", max_length=200)
    st.add(d)
    queries = [docs[f"doc{i:03d}.txt"].split(".")[1] for i in range(0, 60, 6)] + ["zzzz nothing"]
    before = [st.search(q, 10) for q in queries]
    st.save(tmp_path / "s")
    assert not list((tmp_path / "s").rglob("*.pkl")) and (tmp_path / "s" / "store.json").is_file()
    again = DocumentStore.load(tmp_path / "s")
    assert [again.search(q, 10) for q in queries] == before
    n = len(again)
    removed = again.remove(["doc000.txt", "doc006.txt"])
    assert removed == 6 == sum(c["doc"] in ("doc000.txt", "doc006.txt") for c in st.chunks)
    assert len(again) == n - removed and not [c for c in again.chunks if c["doc"] in ("doc000.txt", "doc006.txt")]
    assert all(h["doc"] not in ("doc000.txt", "doc006.txt") for h in again.search(queries[0] + " " + queries[1], 50))
    again.save(tmp_path / "s")
    third = DocumentStore.load(tmp_path / "s")
    assert len(third) == n - removed and "doc000.txt" not in third.docs
    assert [third.search(q, 10) for q in queries[2:]] == [again.search(q, 10) for q in queries[2:]]


def test_bm25_load_never_unpickles(corpus_dir, tmp_path, monkeypatch):
    d, _ = corpus_dir
    st = DocumentStore("bm25"); st.add(d); st.save(tmp_path / "s")
    import pickle
    def boom(*a, **k): raise AssertionError("pickle used while loading a store")
    monkeypatch.setattr(pickle, "load", boom); monkeypatch.setattr(pickle, "loads", boom)
    assert DocumentStore.load(tmp_path / "s").search("the", 1) is not None


# ---------------------------------------------------------------- dense, hybrid, faiss

class Fixed(Embedder):
    "Pre-computed vectors: query text 'qN' maps to row N of `queries`."
    def __init__(self, queries, dim):
        self.queries, self.dim, self.spec, self.fingerprint = queries, dim, "fixed", "fixed"
    def embed(self, texts): return np.stack([self.queries[int(t[1:])] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


@has_faiss
def test_faiss_equals_exact():
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((5000, 48)).astype(np.float32); vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    qs = rng.standard_normal((25, 48)).astype(np.float32); qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    r = DenseRetriever(Fixed(qs, 48), faiss_min=10**9)
    r.vecs = vecs
    for j in range(25):
        i1, s1 = r.search_vector(qs[j], 10, use_faiss=False)
        i2, s2 = r.search_vector(qs[j], 10, use_faiss=True)
        assert i1.tolist() == i2.tolist() and np.allclose(s1, s2, atol=1e-5)
    r.faiss_min, r._faiss = 1000, None                         # the threshold switches the default path to faiss
    assert r.search("q3", None, 5)[0].tolist() == r.search_vector(qs[3], 5, use_faiss=False)[0].tolist() and r._faiss is not None


@has_st
def test_st_store_save_load_and_refuses_other_embedder(tiny_st, corpus_dir, tmp_path):
    d, docs = corpus_dir
    st = DocumentStore(f"st:{tiny_st[0]}")
    st.add(d)
    assert st.retriever.vecs.shape == (len(st), 32) and np.allclose(np.linalg.norm(st.retriever.vecs, axis=1), 1, atol=1e-5)
    qs = [c["text"] for c in st.chunks[::20]]
    before = [st.search(q, 5) for q in qs]
    assert all(b[0]["text"] == q for b, q in zip(before, qs))     # exact text is its own nearest neighbour
    st.save(tmp_path / "s")
    assert [DocumentStore.load(tmp_path / "s").search(q, 5) for q in qs] == before
    with pytest.raises(SmaError, match="built by embedder st:") as e: DocumentStore.load(tmp_path / "s", retriever=f"st:{tiny_st[1]}")
    assert "\n" not in str(e.value)
    with pytest.raises(SmaError, match="built by embedder st:"): DocumentStore.load(tmp_path / "s", retriever="bm25")


@has_st
@has_faiss
def test_st_store_faiss_path_same_results(tiny_st, corpus_dir):
    d, _ = corpus_dir
    st = DocumentStore(f"st:{tiny_st[0]}", split="sentence")
    st.add(d)
    qs = ["ba ce di", "the river floods", st.chunks[5]["text"]]
    exact = [st.search(q, 10) for q in qs]
    st.retriever.faiss_min = 1
    fast = [st.search(q, 10) for q in qs]
    assert st.retriever._faiss is not None
    for a, b in zip(exact, fast):
        assert [h["chunk"] for h in a] == [h["chunk"] for h in b] and np.allclose([h["score"] for h in a], [h["score"] for h in b], atol=1e-5)


@has_st
def test_hybrid_is_rrf_of_its_parts(tiny_st, corpus_dir):
    d, docs = corpus_dir
    st = DocumentStore(f"hybrid:bm25+st:{tiny_st[0]}")
    st.add(d)
    bm, dense = st.retriever.parts
    q = docs["doc010.txt"].split(".")[0]
    a = bm.search(q, st.texts, 100)[0]; b = dense.search(q, st.texts, 100)[0]
    hits = st.search(q, 10)
    for h in hits:
        want = sum(1 / (60 + r) for r in [list(a).index(h["chunk"]) + 1 if h["chunk"] in a else None,
                                          list(b).index(h["chunk"]) + 1 if h["chunk"] in b else None] if r)
        assert math.isclose(h["score"], want, rel_tol=1e-12)
    assert hits[0]["doc"] == "doc010.txt"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


# ---------------------------------------------------------------- metrics

def test_metrics_by_hand():
    # ranking d3 d1 d7 d2 ...; relevant {d1, d2}: hits at ranks 2 and 4
    m = query_metrics(["d3", "d1", "d7", "d2", "d9"], ["d1", "d2"])
    assert m["recall@1"] == 0 and m["recall@5"] == 1 and m["mrr@10"] == 0.5
    # DCG = 1/log2(3) + 1/log2(5) = 0.6309298 + 0.4306766; IDCG = 1 + 1/log2(3) = 1.6309298
    assert math.isclose(m["ndcg@10"], 1.0616064 / 1.6309298, rel_tol=1e-6)
    # relevant beyond rank 10 counts for nothing at 10; more relevant documents than 10 cap the ideal at 10
    m = query_metrics([f"x{i}" for i in range(10)] + ["r"], ["r"])
    assert m == {"recall@1": 0, "recall@5": 0, "recall@10": 0, "mrr@10": 0, "ndcg@10": 0}
    m = query_metrics([f"r{i}" for i in range(10)], [f"r{i}" for i in range(12)])
    assert m["ndcg@10"] == 1.0 and math.isclose(m["recall@10"], 10 / 12)
    avg = retrieval_metrics([["a", "b"], ["c"]], [["b"], ["z"]])
    assert avg["recall@1"] == 0 and avg["recall@5"] == 0.5 and avg["mrr@10"] == 0.25 and avg["n"] == 2


# ---------------------------------------------------------------- RAG with a tiny kit model

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    import torch
    from sma_kit.config import preset
    from sma_kit.tokenizer import byte_tokenizer
    from sma_kit.torch.model import DecoderLM
    from sma_kit.torch.train import save_model
    from sma_kit.generate import TextLM
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny", vocab_size=tok.vocab_size, max_seq_len=192))
    d = tmp_path_factory.mktemp("lm") / "gen"
    save_model(model, d, tok)
    return TextLM(model, tok, "tiny"), d


def test_rag_prompt_truncation(tiny_lm, corpus_dir):
    lm, _ = tiny_lm
    d, docs = corpus_dir
    st = DocumentStore("bm25"); st.add(d)                     # paragraphs of ~110 characters
    rag = RAGModel(st, lm)
    q = docs["doc020.txt"].split("\n\n")[1]
    res = rag.generate(q[:40], top_k=6, max_length=20, temperature=0.0, seed=0)
    assert res["prompt_tokens"] <= 192 - 20 and res["truncated"]
    ranks = [s["rank"] for s in res["sources"]] + [x["rank"] for x in res["dropped"]]
    assert ranks == list(range(1, 7)) and res["dropped"]                      # lowest-ranked dropped, in rank order
    assert [s["cut"] for s in res["sources"]] in ([False] * len(res["sources"]), [False] * (len(res["sources"]) - 1) + [True])
    for s in res["sources"]:
        assert docs[s["doc"]][s["start"]:s["end"]] in res["prompt"]
    assert res["sources"][0]["doc"] == "doc020.txt" and isinstance(res["answer"], str)
    assert f"{len(res['dropped'])} of 6 retrieved chunks dropped" in res["note"]
    assert len(lm.tok.encode(res["prompt"])) == res["prompt_tokens"]


def test_rag_loglik_uses_retrieved_context(tiny_lm, corpus_dir):
    lm, _ = tiny_lm
    d, docs = corpus_dir
    st = DocumentStore("bm25"); st.add(d)
    rag = RAGModel(st, lm)
    q = docs["doc030.txt"].split(".")[0]
    ll = rag.loglik([(q, " yes"), (q, " no")], top_k=2)
    ctx = rag.context(q, 2, reserve=4)["prompt"]             # the longest continuation, " yes", is 4 byte tokens
    assert q in ctx and docs["doc030.txt"].split("\n\n")[0][:50] in ctx
    assert np.allclose(ll, lm.loglik([(ctx, " yes"), (ctx, " no")]), atol=1e-4)
    assert not np.allclose(ll, lm.loglik([(f"Question: {q}\nAnswer:", " yes"), (f"Question: {q}\nAnswer:", " no")]), atol=1e-4)


# ---------------------------------------------------------------- the command line

def test_cli_index_search_eval_generate(corpus_dir, tiny_lm, tmp_path):
    d, docs = corpus_dir
    extra = tmp_path / "extra"; extra.mkdir()
    (extra / "notes.jsonl").write_text(json.dumps({"id": "note-1", "text": "Quokkas smile at tourists on Rottnest island."}) + "\n")
    store = tmp_path / "store"
    p = rag_cli("index", "--docs", d, extra, "--store", store, "--split", "paragraph", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["documents"] == len(docs) + 1 and r["retriever"] == "bm25"
    p = rag_cli("search", "--store", store, "--query", "why do quokkas smile", "--top_k", 3, "--json")
    assert p.returncode == 0, p.stderr
    hits = json.loads(p.stdout)
    assert hits[0]["doc"] == "note-1" and hits[0]["source"] == "notes.jsonl:1" and hits[0]["text"].startswith("Quokkas")
    p = rag_cli("search", "--store", store, "--query", "quokkas")
    assert p.returncode == 0 and p.stdout.startswith("  1. ") and "note-1 [0:45]" in p.stdout, p.stdout
    qf = tmp_path / "q.jsonl"
    qf.write_text("".join(json.dumps(dict(query=docs[k].split("\n\n")[2], relevant=[k])) + "\n" for k in list(docs)[:10]))
    p = rag_cli("eval", "--store", store, "--queries", qf, "--json")
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)
    assert m["recall@1"] == 1.0 and m["ndcg@10"] == 1.0 and m["n"] == 10
    p = rag_cli("generate", "--store", store, "--model_dir", tiny_lm[1], "--query", "quokkas on the island", "--max_new_tokens", 8,
                "--temperature", 0, "--json")
    assert p.returncode == 0, p.stderr
    g = json.loads(p.stdout)
    assert g["sources"][0]["doc"] == "note-1" and "Quokkas smile" in g["prompt"] and isinstance(g["answer"], str)


def test_cli_bad_input_one_line(corpus_dir, tmp_path):
    d, _ = corpus_dir
    empty = tmp_path / "empty"; empty.mkdir()
    one_error_line(rag_cli("index", "--docs", empty, "--store", tmp_path / "s0"), "no text to index")
    one_error_line(rag_cli("index", "--docs", tmp_path / "missing", "--store", tmp_path / "s0"), "no such file or folder")
    one_error_line(rag_cli("index", "--docs", d, "--store", tmp_path / "s1", "--split", "words"), "unknown split method 'words'")
    one_error_line(rag_cli("index", "--docs", d, "--store", tmp_path / "s1", "--split", "regex", "--pattern", "(a"), "bad regex pattern '(a'")
    one_error_line(rag_cli("search", "--store", tmp_path / "nowhere", "--query", "x"), "not a document store")
    one_error_line(rag_cli("fetch", "--store", tmp_path / "nowhere"), "unknown command 'fetch'")
    one_error_line(rag_cli("index", "--docs", d, "--store", tmp_path / "s2", "--retriever", "tfidf"), "unknown retriever 'tfidf'")
    assert rag_cli("index", "--docs", d, "--store", tmp_path / "s3").returncode == 0
    one_error_line(rag_cli("search", "--store", tmp_path / "s3", "--query", "x", "--retriever", "hybrid:bm25+bm25"), "built by embedder bm25")
    one_error_line(rag_cli("search", "--store", tmp_path / "s3"), "missing required flag: --query")


@has_st
def test_cli_refuses_store_of_another_embedder(tiny_st, corpus_dir, tmp_path):
    d, _ = corpus_dir
    assert rag_cli("index", "--docs", d, "--store", tmp_path / "s", "--retriever", f"st:{tiny_st[0]}").returncode == 0
    one_error_line(rag_cli("search", "--store", tmp_path / "s", "--query", "x", "--retriever", f"st:{tiny_st[1]}"), "built by embedder st:")


def test_backend_free_imports():
    code = ("import sys\nimport sma_kit.split, sma_kit.retrieval, sma_kit.rag\n"
            "print(','.join(sorted(m for m in ('torch', 'jax', 'flax', 'bm25s', 'faiss', 'sentence_transformers') if m in sys.modules)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "", p.stdout + p.stderr
