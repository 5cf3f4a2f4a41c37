"""Papermill jobs end to end: every job runs on a tiny config and writes its files; parameters reach the notebook and
are recorded; bad parameters are one line naming them (before the kernel, and inside plain papermill); one seed gives
one metrics.json; every recorded figure matches a computation of its own; a job never replaces a model or writes into
its inputs unasked, and keeps hub data in its cache; the kaggle/ folders install the kit's own wheel without touching
the image's packages, and are what `kaggle kernels push` accepts."""
import hashlib, json, math, os, subprocess, sys
from pathlib import Path
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
from sma_kit.config import SmaError, TrainConfig
from sma_kit.backend import load_backend
from sma_kit.data import load_corpus_streams
from sma_kit import jobs, hub, job_report as report, kaggle

BIN = Path(sys.executable).parent
TINY = dict(d_model=32, n_heads=2, n_layers=1, ffn_dim=64, seq_len=32, vocab_size=300, max_steps=6, batch_size=4, eval_every=3, seed=7)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    "The environment of every subprocess: offline, with a throwaway cache folder."
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "SMA_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    "The console scripts as their entry points run them (a `__main__` file calling the `call_parse` function)."
    d = tmp_path_factory.mktemp("bin")
    for mod, fn in (("sma_kit.jobs", "run_job_cli"), ("sma_kit.kaggle", "kaggle_prepare_cli")):
        (d / f"{fn}.py").write_text(f"import sys\nfrom {mod} import {fn}\nif __name__ == '__main__':\n    sys.exit({fn}())\n")
    return d


def run(scripts, env, fn, *args, timeout=300):
    return subprocess.run([sys.executable, str(scripts / f"{fn}.py"), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def papermill(env, nb, out, params: dict, timeout=300):
    "Plain `papermill NB OUT -p KEY VALUE ...`."
    ps = [x for k, v in params.items() for x in ("-p", k, str(v))]
    return subprocess.run([str(BIN / "papermill"), str(nb), str(out), *ps], capture_output=True, text=True, timeout=timeout, env=env)


def flags(d: dict) -> list:
    return [x for k, v in d.items() for x in ("--p", k, v)]


def one_error_line(p, code, *needles):
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    for n in needles: assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def tree(d: Path) -> dict:
    "Every file under `d` with its sha256 and mtime."
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    "A DATA root: general/ and one specialist domain, math/."
    root = tmp_path_factory.mktemp("jobs") / "data"
    (root / "general").mkdir(parents=True); (root / "math").mkdir()
    (root / "general" / "pigs.txt").write_text("".join(f"{i} little pigs went to market and {i % 7} came home to eat {i % 5} apples.\n" for i in range(500)))
    (root / "math" / "sums.jsonl").write_text("".join(f'{{"question": "What is {i} + {i}?", "answer": "#### {2 * i}"}}\n' for i in range(400)))
    return root


@pytest.fixture(scope="module")
def generalist(corpus, scripts, env):
    "train_generalist through sma_run_job, with overridden parameters."
    out = corpus.parent / "gen"
    p = run(scripts, env, "run_job_cli", "train_generalist", *flags({**TINY, "data_dir": corpus}), "--output_dir", out, "--quiet")
    return out, p


def test_train_generalist_writes_files_and_records_parameters(generalist, corpus):
    out, p = generalist
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == f"executed notebook: {out / 'train_generalist.ipynb'}"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "metrics.json", "loss.png", "perplexity.png",
              "train_generalist.ipynb", "train_generalist.log"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    P = m["parameters"]
    assert {k: P[k] for k in TINY} == TINY and P["data_dir"] == str(corpus) and P["output_dir"] == str(out)
    assert P["backend"] == "torch" and P["preset"] == "tiny" and P["lr"] == TrainConfig().lr and P["weight_decay"] == TrainConfig().weight_decay
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["d_model"], cfg["n_layers"], cfg["ffn_dim"], cfg["max_seq_len"]) == (32, 1, 64, 32) and cfg["vocab_size"] <= 300
    f = m["figures"]
    assert f["steps"] == 6 and list(f["perplexity"]) == ["general", "math"] and f"final_val_loss: {f['final_val_loss']:.4g}" in p.stdout
    assert m["data"] == {"source": "local", "domains": {"general": 1, "math": 1}} and "train_s" in m["timing"]
    B = load_backend("torch"); model, tok = B.load_model(out, "cpu")   # the recorded figures are those of the saved model
    own = B.eval_domains(model, tok, corpus, 32)
    assert f["perplexity"] == pytest.approx({d: math.exp(v["val_loss"]) for d, v in own.items()}, rel=1e-5)
    assert f["n_params"] == model.num_params()
    executed = json.loads((out / "train_generalist.ipynb").read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "max_steps = 6" in "".join(injected[0]["source"])


def test_plain_papermill_same_seed_same_metrics(generalist, corpus, tmp_path, env):
    "Plain papermill runs the same notebook; with one seed it reproduces metrics.json (wall-clock fields aside)."
    out, p = generalist
    assert p.returncode == 0, p.stderr
    q = papermill(env, jobs.job_notebook("train_generalist"), tmp_path / "executed.ipynb", {**TINY, "data_dir": corpus, "output_dir": tmp_path / "again"})
    assert q.returncode == 0, q.stderr[-3000:]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "again"))
    assert report.comparable(a) == report.comparable(b)
    assert a["timing"] != {} and a["parameters"]["output_dir"] != b["parameters"]["output_dir"]
    c = dict(report.comparable(b)); c["parameters"] = {**c["parameters"], "seed": 8}
    assert c != report.comparable(a)


def test_a_model_in_output_dir_is_not_replaced(generalist, corpus, scripts, env, tmp_path):
    "Without overwrite=True a job refuses an output_dir holding a model: sma_run_job before the kernel, plain papermill in the notebook."
    out, p = generalist
    assert p.returncode == 0, p.stderr
    before = tree(out)
    q = run(scripts, env, "run_job_cli", "train_generalist", *flags({**TINY, "data_dir": corpus}), "--output_dir", out, "--quiet")
    one_error_line(q, 2, str(out), "already holds a model", "overwrite")
    r = papermill(env, jobs.job_notebook("train_generalist"), tmp_path / "x.ipynb", {**TINY, "data_dir": corpus, "output_dir": out})
    assert r.returncode != 0 and "already holds a model" in r.stderr
    assert tree(out) == before


@pytest.fixture(scope="module")
def shiftable(generalist, corpus, scripts, env):
    gen, p = generalist
    assert p.returncode == 0, p.stderr
    before = tree(gen)
    out = corpus.parent / "shift"
    q = run(scripts, env, "run_job_cli", "train_specialists",
            *flags({"generalist_dir": gen, "data_dir": corpus, "max_steps": 6, "batch_size": 4, "heatmap_tokens": 24}), "--output_dir", out, "--quiet")
    return out, q, before, tree(gen)


def test_train_specialists(shiftable, generalist, corpus):
    out, p, gen_before, gen_after = shiftable
    assert p.returncode == 0, p.stderr
    assert gen_after == gen_before   # the input generalist is only read: no plot or file written into it
    for f in ("specialists.json", "model.safetensors", "metrics.jsonl", "metrics.json", "loss.png", "perplexity.png", "gates_math.png"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    f = m["figures"]
    assert f["specialists"] == ["math"] and f["steps"] == 6 and set(f["mean_gate"]) == {"general", "math"}
    assert m["parameters"]["heatmap_tokens"] == 24 and not (out / "generalist").exists() and "routing_accuracy: " in p.stdout
    B = load_backend("torch")   # routing accuracy and gates as the backend measures them on the saved model
    model, tok = B.load_model(out, "cpu")
    _, val = load_corpus_streams(hub.corpus_domains(corpus), tok, 0.1, model.cfg.max_seq_len)
    rep = B.routing_report(model, val, model.cfg.max_seq_len)
    assert f["routing_accuracy"] == pytest.approx(rep["accuracy"]) and f["mean_gate"]["math"] == pytest.approx(dict(zip(rep["experts"], rep["mean_gate"]["math"])))
    gmodel, gtok = B.load_model(generalist[0], "cpu")
    assert f["generalist_perplexity"] == pytest.approx({d: v["perplexity"] for d, v in B.eval_domains(gmodel, gtok, corpus, 32).items()}, rel=1e-5)


def test_evaluate_shiftable_model(shiftable, corpus, tmp_path, scripts, env):
    model_dir = shiftable[0]
    assert shiftable[1].returncode == 0, shiftable[1].stderr
    before = tree(model_dir)
    q = run(scripts, env, "run_job_cli", "evaluate", *flags({"model_dir": model_dir, "data_dir": corpus, "routing": "topk", "route_k": 1, "max_new_tokens": 8}),
            "--output_dir", tmp_path, "--quiet")
    assert q.returncode == 0, q.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["domain"] for r in report.read_jsonl(tmp_path / "metrics.jsonl")] == ["general", "math"]
    assert m["figures"]["routing"] == {"mode": "topk", "top_k": 1} and (tmp_path / "perplexity.png").is_file() and (tmp_path / "gates_math.png").is_file()
    B = load_backend("torch"); model, tok = B.load_model(model_dir, "cpu", "topk", 1)
    assert m["figures"]["sample"] == "The function returns" + B.complete(model, tok, "The function returns", 8, seed=m["parameters"]["seed"])[0].text
    assert tree(model_dir) == before
    r = run(scripts, env, "run_job_cli", "evaluate", *flags({"model_dir": model_dir, "data_dir": corpus, "overwrite": True}), "--output_dir", model_dir)
    one_error_line(r, 2, "the job's model_dir")
    assert tree(model_dir) == before


def test_benchmark_with_the_builtin_corpus(tmp_path, scripts, env):
    "data_dir left at None: the built-in corpus, built into the cache (not output_dir)."
    p = run(scripts, env, "run_job_cli", "benchmark", *flags({"max_steps": 4, "log_every": 1, "gen_tokens": 8, "peak_tflops": 1.0}), "--output_dir", tmp_path, "--quiet")
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["data"]["source"] == "builtin" and set(m["data"]["domains"]) == {"general", "python", "datascience"} and not (tmp_path / "data").exists()
    assert any(Path(env["SMA_CACHE_DIR"], "builtin").iterdir())
    t, f = m["timing"], m["figures"]
    tps = sorted(r["tokens_per_s"] for r in report.read_jsonl(tmp_path / "metrics.jsonl") if "tokens_per_s" in r)
    assert t["train_tokens_per_s"] in tps and t["mfu"] == pytest.approx(t["train_tokens_per_s"] * f["flops_per_token"] / 1e12)
    B = load_backend("torch"); model, tok = B.load_model(tmp_path, "cpu")
    assert f["gen_tokens"] == len(B.complete(model, tok, "The function returns", 8, temperature=0.0, top_k=None, seed=m["parameters"]["seed"])[0].ids)
    assert f["steps"] == 4 and (tmp_path / "throughput.png").is_file() and "train_tokens_per_s: " in p.stdout
    assert m["machine"]["backend"] == "torch" and m["machine"]["cpus"] == os.cpu_count()


@pytest.mark.parametrize("args, needles", [
    (["--p", "backend", "tf"], ["parameter backend", "torch, jax, xla", "'tf'"]),
    (["--p", "max_steps", "-3"], ["--max_steps must be at least 1, got -3"]),
    (["--p", "max_stpes", "30"], ["unknown parameter max_stpes", "train_generalist"]),
    (["--p", "lr", "fast"], ["parameter lr", "float", "'fast'"]),
    (["--p", "branch", "x"], ["unknown parameter branch"]),
])
def test_bad_parameter_stops_before_the_kernel(tmp_path, args, needles, scripts, env):
    p = run(scripts, env, "run_job_cli", "train_generalist", *args, "--output_dir", tmp_path / "out")
    one_error_line(p, 2, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("params, needle", [({"backend": "tf"}, "parameter backend"), ({"max_stpes": 30}, "unknown parameter max_stpes")])
def test_bad_parameter_inside_plain_papermill(tmp_path, params, needle, env):
    "papermill itself only warns about an unknown name; the notebook stops on it, naming it."
    p = papermill(env, jobs.job_notebook("train_generalist"), tmp_path / "x.ipynb", {**params, "output_dir": tmp_path})
    assert p.returncode != 0 and needle in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "model.safetensors").exists()


def test_failing_cell_is_one_line(tmp_path, scripts, env):
    "A cell that raises fails sma_run_job with exit 1 and that error (here: a Hugging Face id while offline)."
    p = run(scripts, env, "run_job_cli", "train_generalist", "--p", "data_dir", "wikitext:wikitext-2-raw-v1", "--output_dir", tmp_path)
    one_error_line(p, 1, "train_generalist: wikitext: the Hugging Face Hub is unreachable", "offline", "pass a local corpus dir",
                   f"executed notebook: {tmp_path / 'train_generalist.ipynb'}")
    assert (tmp_path / "train_generalist.ipynb").is_file() and not (tmp_path / "model.safetensors").exists()


def test_list_and_params(scripts, env):
    p = run(scripts, env, "run_job_cli", "list")
    assert p.returncode == 0 and p.stdout.split()[::2][:len(jobs.JOB_NAMES)] == list(jobs.JOB_NAMES)
    p = run(scripts, env, "run_job_cli", "train_specialists", "--params")
    rows = {l.split()[0]: l.split()[1] for l in p.stdout.splitlines()}
    assert p.returncode == 0 and rows["lr"] == repr(TrainConfig().lr) and rows["lora_rank"] == "8" and rows["overwrite"] == "False"


def test_unavailable_backend_is_named(tmp_path, corpus, scripts, env):
    import importlib.util
    if importlib.util.find_spec("torch_xla") is not None: pytest.skip("torch_xla is installed here")
    p = run(scripts, env, "run_job_cli", "train_generalist", "--p", "backend", "xla", "--p", "data_dir", corpus, "--output_dir", tmp_path)
    one_error_line(p, 1, "needs PyTorch/XLA", "torch_xla")


def test_jax_backend_trains_and_evaluates(corpus, tmp_path, scripts, env):
    pytest.importorskip("jax", reason="the jax extra is not installed")
    p = run(scripts, env, "run_job_cli", "train_generalist", *flags({**TINY, "backend": "jax", "data_dir": corpus}), "--output_dir", tmp_path, "--quiet")
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["parameters"]["backend"] == "jax" and m["figures"]["steps"] == 6 and list(m["figures"]["perplexity"]) == ["general", "math"]
    assert m["machine"]["backend"] == "jax" and (tmp_path / "model.safetensors").is_file()
    out = tmp_path / "shift"   # the train_specialists job on JAX, on that generalist
    q = run(scripts, env, "run_job_cli", "train_specialists", *flags({"backend": "jax", "generalist_dir": tmp_path, "data_dir": corpus, "max_steps": 6,
                                                                       "batch_size": 4, "heatmap_tokens": 24, "branch": "lora"}), "--output_dir", out, "--quiet")
    assert q.returncode == 0, q.stderr
    f = json.loads((out / "metrics.json").read_text())["figures"]
    assert f["specialists"] == ["math"] and f["steps"] == 6 and set(f["mean_gate"]) == {"general", "math"}
    B = load_backend("jax"); model, tok = B.load_model(out)
    _, val = load_corpus_streams(hub.corpus_domains(corpus), tok, 0.1, model.cfg.max_seq_len)
    assert f["routing_accuracy"] == pytest.approx(B.routing_report(model, val, model.cfg.max_seq_len)["accuracy"], abs=1e-6)
    assert json.loads((out / "specialists.json").read_text())["branch"] == "lora" and (out / "gates_math.png").is_file()


def test_hub_data_goes_to_the_cache_not_output_dir(tmp_path, monkeypatch):
    "A dataset id used to replace output_dir/data/<domain> outright; now a user's folder there is untouched."
    import datasets
    monkeypatch.setenv("SMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, cfg=None, split="train", **kw: datasets.Dataset.from_dict({"text": [f"{name} {i}" for i in range(9)]}))
    mine = tmp_path / "out" / "data" / "general"; mine.mkdir(parents=True); (mine / "notes.txt").write_text("my own notes\n")
    root, s = hub.prepare_data({"data_dir": "someone/wiki", "output_dir": str(tmp_path / "out")})
    assert (mine / "notes.txt").read_text() == "my own notes\n" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert root.parent == tmp_path / "cache" / "hub" and (root / "general" / "train-00000.txt").read_text().startswith("someone/wiki 0")
    assert hub.prepare_data({"data_dir": "someone/wiki"})[0] == root and not any(p.name.endswith(".tmp") for p in root.parent.iterdir())


def test_write_hub_corpus_through_local_files(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"text": f"Row {i} of the corpus.", "n": i}) + "\n" for i in range(30)))
    d = hub.write_hub_corpus("json", tmp_path / "data", split="train", data_files=str(src), domain="general")
    assert d == tmp_path / "data" / "general" and [f.name for f in d.iterdir()] == ["train-00000.txt"]
    assert (d / "train-00000.txt").read_text().startswith("Row 0 of the corpus.\n\nRow 1")
    with pytest.raises(SmaError, match="already exists"):
        hub.write_hub_corpus("json", tmp_path / "data", data_files=str(src), domain="general")
    with pytest.raises(SmaError, match="Hub is unreachable.*offline.*local corpus dir"):
        hub.write_hub_corpus("gsm8k", tmp_path / "other", "main")


ROUTER_TINY = dict(d_model=32, n_heads=2, n_layers=1, ffn_dim=64, seq_len=128, vocab_size=300, generalist_steps=4, finetune_steps=4,
                   max_steps=6, batch_size=4, eval_every=3, head_hidden_dim=16, max_new_tokens=6, seed=7)


@pytest.fixture(scope="module")
def router_job(corpus, scripts, env):
    "train_router with models=None: the job trains a tiny generalist and a math fine-tune of it, then the router's heads over both."
    qa = corpus.parent / "router_sets" / "pigs.jsonl"; qa.parent.mkdir()
    qa.write_text("".join(json.dumps({"question": f"How many pigs went to market on day {i}?", "answer": f"{i % 9} little pigs went."}) + "\n" for i in range(200)))
    out = corpus.parent / "router"
    p = run(scripts, env, "run_job_cli", "train_router", *flags({**ROUTER_TINY, "data_dir": corpus, "datasets": f"{qa},{corpus / 'math' / 'sums.jsonl'}"}),
            "--output_dir", out, "--quiet", timeout=600)
    return out, p


def test_train_router_trains_members_and_heads(router_job):
    out, p = router_job
    assert p.returncode == 0, p.stderr[-3000:]
    for f in ("router.safetensors", "router.json", "metrics.jsonl", "metrics.json", "loss.png", "shares.png", "members/general/model.safetensors",
              "members/math/model.safetensors"):
        assert (out / f).is_file(), f
    gen, ft = out / "members" / "general", out / "members" / "math"   # the math member is a fine-tune of the generalist: its shape and tokenizer
    assert json.loads((gen / "config.json").read_text()) == json.loads((ft / "config.json").read_text())
    assert (gen / "tokenizer.json").read_bytes() == (ft / "tokenizer.json").read_bytes() and (gen / "model.safetensors").read_bytes() != (ft / "model.safetensors").read_bytes()
    m = json.loads((out / "metrics.json").read_text())
    P, f = m["parameters"], m["figures"]
    assert {k: P[k] for k in ROUTER_TINY} == ROUTER_TINY and P["models"] is None and f["members"] == ["general", "math"]
    assert f["steps"] == 6 and f["tokens_seen"] > 0 and f["datasets"] == {"pigs": [200, 200], "sums": [400, 200]} and abs(sum(f["val_share"].values()) - 1) < 1e-5
    rj = json.loads((out / "router.json").read_text())   # the recorded figures are those of the saved router
    assert f["best_val_loss"] == pytest.approx(rj["val_loss"]) and rj["best_step"] == f["best_step"]
    val = [r for r in report.read_jsonl(out / "metrics.jsonl") if "val_loss" in r]
    assert f["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in val))
    from sma_kit.torch.router import RouterEnsemble, complete
    ens, tok = RouterEnsemble.from_pretrained(out, device="cpu")
    assert [Path(s).name for s in rj["members"]] == ["general", "math"] and sum(q.numel() for q in ens.head_params()) == f["n_head_params"]
    c = complete(ens, tok, P["prompt"], 6, temperature=0.0, mode="select")[0]
    assert f["sample"] == c.prompt + c.text and f["sample_members"] == [ens.names[i] for i in c.members]
    assert "val_share: general" in p.stdout


def test_train_router_over_given_members_reads_them_only(router_job, corpus, scripts, env, tmp_path):
    "With models given the job trains no member and writes nothing into them; a router in output_dir is not replaced unasked."
    out, p = router_job
    assert p.returncode == 0, p.stderr[-3000:]
    mem = out / "members"
    before, models = tree(mem), f"{mem / 'general'},{mem / 'math'}"
    q = run(scripts, env, "run_job_cli", "train_router", *flags({"models": models, "datasets": corpus / "math" / "sums.jsonl", "max_steps": 3,
                                                                   "eval_every": 3, "head_hidden_dim": 8, "max_new_tokens": 4}),
            "--output_dir", tmp_path / "r", "--quiet", timeout=600)
    assert q.returncode == 0, q.stderr[-3000:]
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["figures"]["members"] == ["general", "math"] and m["figures"]["steps"] == 3 and m["data"] == {} and not (tmp_path / "r" / "members").exists()
    assert tree(mem) == before
    r = run(scripts, env, "run_job_cli", "train_router", *flags({"models": models, "datasets": corpus / "math" / "sums.jsonl", "max_steps": 3}),
            "--output_dir", tmp_path / "r", "--quiet")
    one_error_line(r, 2, str(tmp_path / "r"), "already holds a model", "overwrite")
    assert tree(mem) == before


@pytest.fixture(scope="module")
def kaggle_folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("kaggle")
    return d, kaggle.kaggle_prepare(d, "carol", "carol/sma-corpus", "jax")


def test_kaggle_kernels_install_the_wheel_dataset(kaggle_folders):
    d, folders = kaggle_folders
    assert [f.name for f in folders] == [kaggle.WHEEL_SLUG, *jobs.JOB_NAMES]
    meta = json.loads((d / kaggle.WHEEL_SLUG / "dataset-metadata.json").read_text())
    assert meta["id"] == "carol/sma-kit-wheel" and len(meta["title"]) >= 6 and meta["licenses"]
    for f in folders[1:]:
        m = kaggle.check_kernel_folder(f)
        tpu = f.name not in kaggle.KAGGLE_BACKEND   # train_router is a GPU (torch) kernel whatever the backend asked for
        assert m["machine_shape"] == ("TpuV5E8" if tpu else "NvidiaTeslaT4") and m["enable_tpu"] is tpu and m["enable_gpu"] is not tpu and "docker_image" not in m
        assert m["dataset_sources"] == ["carol/sma-kit-wheel", "carol/sma-corpus"]
        text = (f / m["code_file"]).read_text()
        assert "git+" not in text
        first = "".join(json.loads(text)["cells"][0]["source"])
        assert f"/kaggle/input/**/{kaggle.wheel_name()}" in first and "'--no-deps'" in first
        extra, acc = ("'jax'", "'jax'") if tpu else ("None", "'torch'")
        assert first.index("--no-deps") < first.index(f"install_missing({extra})") < first.index(f"check_accelerator({acc})")


def test_the_wheel_installs_and_finds_what_is_missing(kaggle_folders, tmp_path):
    "The wheel installs with --no-deps into a bare target, and its kaggle_setup runs there on the standard library alone."
    whl = kaggle_folders[0] / kaggle.WHEEL_SLUG / kaggle.wheel_name()
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(tmp_path / "t"), str(whl)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    code = (f"import sys; sys.path.insert(0, {str(tmp_path / 't')!r}); from sma_kit import kaggle_setup as k; "
            "print(k.requirements('jax')); print(k.install_missing('jax', dry_run=True))")
    q = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)   # -S: no site-packages, only the wheel
    assert q.returncode == 0, q.stderr
    reqs, missing = (eval(l) for l in q.stdout.splitlines())
    assert {"jax>=0.6", "flax>=0.12", "numpy"} <= set(reqs) and set(missing) == set(reqs)   # a bare interpreter lacks them all


def test_install_keeps_the_images_packages(monkeypatch):
    "Only absent requirements are installed, under constraints that pin every installed distribution (the TPU jax stays)."
    from sma_kit import kaggle_setup as ks
    calls = []
    monkeypatch.setattr(ks, "installed", lambda: {"jax": "0.4.35", "jaxlib": "0.4.35", "libtpu": "0.0.2", "numpy": "1.26.4"})
    monkeypatch.setattr(ks, "requirements", lambda extra=None: ["numpy", "jax>=0.6", "flax>=0.12"])
    monkeypatch.setattr(ks.subprocess, "run", lambda cmd, check: calls.append((cmd, Path(cmd[cmd.index("-c") + 1]).read_text())))
    assert ks.install_missing("jax") == ["flax>=0.12"]
    (cmd, constraints), = calls
    assert cmd[-1] == "flax>=0.12" and "jax" not in cmd and "--upgrade" not in cmd
    assert set(constraints.split()) == {"jax==0.4.35", "jaxlib==0.4.35", "libtpu==0.0.2", "numpy==1.26.4"}


def test_kaggle_prepare_requires_user_and_a_pinned_install(tmp_path, scripts, env):
    with pytest.raises(SmaError, match="--user is required"): kaggle.kaggle_prepare(tmp_path / "k")
    p = run(scripts, env, "kaggle_prepare_cli", "--out_dir", tmp_path / "k")
    one_error_line(p, 2, "--user is required")
    p = run(scripts, env, "kaggle_prepare_cli", "--user", "dave", "--out_dir", tmp_path / "k", "--install", "git+https://github.com/sma-kit/sma_kit")
    one_error_line(p, 2, "not pinned")
    assert not (tmp_path / "k").exists()


def test_committed_kaggle_folders_are_current(tmp_path):
    committed = jobs.repo_root() / "kaggle"
    user = json.loads((committed / "train_generalist" / "kernel-metadata.json").read_text())["id"].split("/")[0]
    for f in kaggle.kaggle_prepare(tmp_path, user, build=False):
        for p in f.iterdir(): assert (committed / f.name / p.name).read_text() == p.read_text(), f"kaggle/{f.name}/{p.name} is stale"
        if f.name != kaggle.WHEEL_SLUG: kaggle.check_kernel_folder(committed / f.name)
    assert "kaggle kernels push -p kaggle/" in (committed / "README.md").read_text()


def test_job_notebooks_carry_the_derived_defaults():
    for job in jobs.JOB_NAMES:
        nb = json.loads(jobs.job_notebook(job).read_text())
        assert jobs.parameters_cell(nb) == {k: p.default for k, p in jobs.JOB_PARAMS[job].items()}, job
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{job}: outputs committed"


ENCODER_TINY = dict(d_model=32, n_heads=2, n_layers=1, ffn_dim=64, seq_len=32, max_steps=6, batch_size=4, eval_every=3, seed=7, tokenizer="byte")


def test_train_encoder_trains_indexes_and_scores(corpus, scripts, env, tmp_path):
    "train_encoder on JAX: the encoder dir (read by PyTorch too), masked-LM metrics, three stores, and retrieval figures that a reload reproduces."
    from sma_kit.encoder import load_model_and_tokenizer   # also registers the encoder:DIR retriever
    from sma_kit.retrieval import DocumentStore, read_queries, evaluate_store
    docs = tmp_path / "docs"; docs.mkdir()
    for i, topic in enumerate(["pigs went to market", "cows came home at night", "apples fell from the tree", "boats sailed on the sea"]):
        (docs / f"d{i}.txt").write_text(f"This note is about {topic}.\n\nIt says again that {topic}, and nothing else.\n")
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"query": f"what about {t}?", "relevant": [f"d{i}.txt"]}) + "\n"
                                              for i, t in enumerate(["pigs", "cows", "apples", "boats"])))
    out = tmp_path / "enc"
    p = run(scripts, env, "run_job_cli", "train_encoder", *flags({**ENCODER_TINY, "data_dir": corpus, "backend": "jax", "docs": docs,
            "queries": tmp_path / "q.jsonl", "split": "sentence"}), "--output_dir", out, "--quiet", timeout=900)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:])
    m = json.loads((out / "metrics.json").read_text())
    f = m["figures"]
    assert m["parameters"]["backend"] == "jax" and f["steps"] == 6 and f["documents"] == 4 and f["queries"] == 4
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("mlm_acc" in r for r in recs) and [r["step"] for r in recs if "val_mlm_acc" in r] == [3, 6]
    assert hasattr(load_model_and_tokenizer(out, "torch", "cpu")[0], "predict_mlm")
    qs = read_queries(tmp_path / "q.jsonl")
    for name in ("bm25", "encoder", "hybrid"):
        got = evaluate_store(DocumentStore.load(out / "stores" / name), qs)
        assert all(abs(got[k] - v) < 1e-9 for k, v in f["retrieval"][name].items()), name
    assert f["retrieval"]["bm25"]["recall@1"] == 1.0


def test_train_encoder_needs_docs_and_queries_together(tmp_path, scripts, env):
    p = run(scripts, env, "run_job_cli", "train_encoder", "--p", "docs", tmp_path, "--output_dir", tmp_path / "o")
    one_error_line(p, 1, "parameters docs and queries: give both")
    p = run(scripts, env, "run_job_cli", "train_encoder", "--p", "mask_prob", "1.5", "--output_dir", tmp_path / "o")
    one_error_line(p, 2, "parameter mask_prob")
