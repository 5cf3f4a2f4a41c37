"""Papermill jobs end to end: every job runs on a tiny config and writes its files; parameters reach the notebook and
are recorded; bad parameters are one line naming them (before the kernel, and inside plain papermill); one seed gives
one metrics.json; Hugging Face ids fail clearly offline; the kaggle/ folders are what `kaggle kernels push` accepts."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
from sma_kit.config import SmaError
from sma_kit import jobs

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TINY = dict(d_model=32, n_heads=2, n_layers=1, ffn_dim=64, seq_len=32, vocab_size=300, max_steps=6, batch_size=4, eval_every=3, seed=7)


def sma_run_job(*args, timeout=300):
    "The `sma_run_job` console script (or its function, before the script is installed)."
    exe = BIN / "sma_run_job"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from sma_kit.jobs import run_job_cli; run_job_cli()"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=ENV)


def papermill(nb, out, params: dict, timeout=300):
    "Plain `papermill NB OUT -p KEY VALUE ...`."
    ps = [x for k, v in params.items() for x in ("-p", k, str(v))]
    return subprocess.run([str(BIN / "papermill"), str(nb), str(out), *ps], capture_output=True, text=True, timeout=timeout, env=ENV)


def flags(d: dict) -> list:
    return [x for k, v in d.items() for x in ("-p", k, v)]


def one_error_line(p, code, *needles):
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    for n in needles: assert str(n) in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    "A DATA root: general/ and one specialist domain, math/."
    root = tmp_path_factory.mktemp("jobs") / "data"
    (root / "general").mkdir(parents=True); (root / "math").mkdir()
    (root / "general" / "pigs.txt").write_text("".join(f"{i} little pigs went to market and {i % 7} came home to eat {i % 5} apples.\n" for i in range(500)))
    (root / "math" / "sums.jsonl").write_text("".join(f'{{"question": "What is {i} + {i}?", "answer": "#### {2 * i}"}}\n' for i in range(400)))
    return root


@pytest.fixture(scope="module")
def generalist(corpus):
    "train_generalist through sma_run_job, with overridden parameters."
    out = corpus.parent / "gen"
    p = sma_run_job("train_generalist", *flags({**TINY, "data_dir": corpus}), "--output_dir", out, "--quiet")
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
    assert P["backend"] == "torch" and P["preset"] == "tiny" and P["lr"] == jobs.JOB_PARAMS["train_generalist"]["lr"].default
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["d_model"], cfg["n_layers"], cfg["ffn_dim"], cfg["max_seq_len"]) == (32, 1, 64, 32) and cfg["vocab_size"] <= 300
    f = m["figures"]
    assert f["steps"] == 6 and list(f["perplexity"]) == ["general", "math"] and f"final_val_loss: {f['final_val_loss']:.4g}" in p.stdout
    assert m["data"] == {"source": "local", "domains": {"general": 1, "math": 1}} and "train_s" in m["timing"]
    executed = json.loads((out / "train_generalist.ipynb").read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "max_steps = 6" in "".join(injected[0]["source"])


def test_plain_papermill_same_seed_same_metrics(generalist, corpus, tmp_path):
    "Plain papermill runs the same notebook; with one seed it reproduces metrics.json (wall-clock fields aside)."
    out, p = generalist
    assert p.returncode == 0, p.stderr
    q = papermill(jobs.job_notebook("train_generalist"), tmp_path / "executed.ipynb", {**TINY, "data_dir": corpus, "output_dir": tmp_path / "again"})
    assert q.returncode == 0, q.stderr[-3000:]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "again"))
    assert jobs.comparable(a) == jobs.comparable(b)
    assert a["timing"] != {} and a["parameters"]["output_dir"] != b["parameters"]["output_dir"]
    c = dict(jobs.comparable(b)); c["parameters"] = {**c["parameters"], "seed": 8}
    assert c != jobs.comparable(a)


@pytest.fixture(scope="module")
def shiftable(generalist, corpus):
    gen, p = generalist
    assert p.returncode == 0, p.stderr
    out = corpus.parent / "shift"
    q = sma_run_job("train_specialists", *flags({"generalist_dir": gen, "data_dir": corpus, "max_steps": 6, "batch_size": 4, "heatmap_tokens": 24}),
                    "--output_dir", out, "--quiet")
    return out, q


def test_train_specialists(shiftable):
    out, p = shiftable
    assert p.returncode == 0, p.stderr
    for f in ("specialists.json", "model.safetensors", "metrics.jsonl", "metrics.json", "loss.png", "perplexity.png", "gates_math.png"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    f = m["figures"]
    assert f["specialists"] == ["math"] and f["steps"] == 6 and set(f["mean_gate"]) == {"general", "math"}
    assert set(f["generalist_perplexity"]) == {"general", "math"} and 0 <= f["routing_accuracy"]["overall"] <= 1
    assert m["parameters"]["heatmap_tokens"] == 24 and not (out / "generalist").exists()
    assert "routing_accuracy: " in p.stdout


def test_evaluate_shiftable_model(shiftable, corpus, tmp_path):
    model, p = shiftable
    assert p.returncode == 0, p.stderr
    q = sma_run_job("evaluate", *flags({"model_dir": model, "data_dir": corpus, "routing": "topk", "route_k": 1, "max_new_tokens": 8}),
                    "--output_dir", tmp_path, "--quiet")
    assert q.returncode == 0, q.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["domain"] for r in jobs.read_jsonl(tmp_path / "metrics.jsonl")] == ["general", "math"]
    assert m["figures"]["routing"] == {"mode": "topk", "top_k": 1} and m["figures"]["sample"].startswith("The function returns")
    assert (tmp_path / "perplexity.png").is_file() and (tmp_path / "gates_math.png").is_file()


def test_benchmark_with_the_builtin_corpus(tmp_path):
    "data_dir left at None: the built-in corpus is built into output_dir/data."
    p = sma_run_job("benchmark", *flags({"max_steps": 4, "log_every": 1, "gen_tokens": 8, "peak_tflops": 1.0}), "--output_dir", tmp_path, "--quiet")
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["data"]["source"] == "builtin" and set(m["data"]["domains"]) == {"general", "python", "datascience"}
    t = m["timing"]
    assert t["train_tokens_per_s"] > 0 and t["step_ms"] > 0 and 0 < t["mfu"] < 1 and t["gen_s"] > 0
    assert m["figures"]["steps"] == 4 and (tmp_path / "throughput.png").is_file() and "train_tokens_per_s: " in p.stdout
    assert m["machine"]["backend"] == "torch" and m["machine"]["cpus"] >= 1


@pytest.mark.parametrize("args, needles", [
    (["-p", "backend", "tf"], ["parameter backend", "torch, jax, xla", "'tf'"]),
    (["-p", "max_steps", "-3"], ["parameter max_steps", "at least 1", "-3"]),
    (["-p", "max_stpes", "30"], ["unknown parameter max_stpes", "train_generalist"]),
    (["-p", "lr", "fast"], ["parameter lr", "float", "'fast'"]),
])
def test_bad_parameter_stops_before_the_kernel(tmp_path, args, needles):
    p = sma_run_job("train_generalist", *args, "--output_dir", tmp_path / "out")
    one_error_line(p, 2, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("params, needle", [({"backend": "tf"}, "parameter backend"), ({"max_stpes": 30}, "unknown parameter max_stpes")])
def test_bad_parameter_inside_plain_papermill(tmp_path, params, needle):
    "papermill itself only warns about an unknown name; the notebook stops on it, naming it."
    p = papermill(jobs.job_notebook("train_generalist"), tmp_path / "x.ipynb", {**params, "output_dir": tmp_path})
    assert p.returncode != 0 and needle in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "model.safetensors").exists()


def test_failing_cell_is_one_line(tmp_path):
    "A cell that raises fails sma_run_job with exit 1 and that error (here: a Hugging Face id while offline)."
    p = sma_run_job("train_generalist", "-p", "data_dir", "wikitext:wikitext-2-raw-v1", "--output_dir", tmp_path)
    line = one_error_line(p, 1, "train_generalist: wikitext: the Hugging Face Hub is unreachable", "offline", "pass a local corpus dir",
                          f"executed notebook: {tmp_path / 'train_generalist.ipynb'}")
    assert (tmp_path / "train_generalist.ipynb").is_file() and not (tmp_path / "model.safetensors").exists()


def test_unavailable_backend_is_named(tmp_path, corpus):
    api_ok = jobs._has_module("sma_kit.torch.xla") and jobs._has_module("torch_xla")
    if api_ok: pytest.skip("torch_xla is installed here")
    p = sma_run_job("train_generalist", "-p", "backend", "xla", "-p", "data_dir", corpus, "--output_dir", tmp_path)
    one_error_line(p, 1, "backend xla", "sma_kit[xla]" if jobs._has_module("sma_kit.torch.xla") else "not available yet")


@pytest.mark.skipif(not (jobs._has_module("jax") and jobs._has_module("sma_kit.jax.train")), reason="jax backend not installed")
def test_jax_backend_trains_and_evaluates(corpus, tmp_path):
    p = sma_run_job("train_generalist", *flags({**TINY, "backend": "jax", "data_dir": corpus}), "--output_dir", tmp_path, "--quiet")
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["parameters"]["backend"] == "jax" and m["figures"]["steps"] == 6 and list(m["figures"]["perplexity"]) == ["general", "math"]
    assert m["machine"]["backend"] == "jax" and (tmp_path / "model.safetensors").is_file()
    # the train_specialists job on JAX, on that generalist: gates, routing accuracy and heatmaps as with torch
    out = tmp_path / "shift"
    q = sma_run_job("train_specialists", *flags({"backend": "jax", "generalist_dir": tmp_path, "data_dir": corpus, "max_steps": 6, "batch_size": 4,
                                                  "heatmap_tokens": 24, "branch": "lora"}), "--output_dir", out, "--quiet")
    assert q.returncode == 0, q.stderr
    f = json.loads((out / "metrics.json").read_text())["figures"]
    assert f["specialists"] == ["math"] and f["steps"] == 6 and set(f["mean_gate"]) == {"general", "math"} and 0 <= f["routing_accuracy"]["overall"] <= 1
    assert json.loads((out / "specialists.json").read_text())["branch"] == "lora" and (out / "gates_math.png").is_file()


def test_load_hub_corpus_through_local_files(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"text": f"Row {i} of the corpus.", "n": i}) + "\n" for i in range(30)))
    d = jobs.load_hub_corpus("json", tmp_path / "data", split="train", data_files=str(src), domain="general")
    assert d == tmp_path / "data" / "general" and [f.name for f in d.iterdir()] == ["train-00000.txt"]
    assert (d / "train-00000.txt").read_text().startswith("Row 0 of the corpus.\n\nRow 1")
    with pytest.raises(SmaError, match="Hub is unreachable.*offline.*local corpus dir"):
        jobs.load_hub_corpus("gsm8k", tmp_path / "data", "main")


def test_kaggle_folders_pass_the_push_checks(tmp_path):
    for f in jobs.kaggle_prepare(tmp_path, "carol", "carol/sma-corpus", "jax"):
        m = jobs.check_kernel_folder(f)
        assert m["machine_shape"] == "TpuV5E8" and m["enable_tpu"] is True and m["enable_internet"] is True
        assert (f / m["code_file"]).is_file() and m["dataset_sources"] == ["carol/sma-corpus"]
    committed = jobs.repo_root() / "kaggle"
    for job in jobs.JOB_NAMES:
        m = jobs.check_kernel_folder(committed / job)
        assert m["code_file"] == f"{job}.ipynb"
    assert (committed / "README.md").is_file() and "kaggle kernels push -p kaggle/" in (committed / "README.md").read_text()


def test_job_notebooks_are_parameterized():
    import papermill as pm
    for job in jobs.JOB_NAMES:
        nb = json.loads(jobs.job_notebook(job).read_text())
        assert sum("parameters" in c["metadata"].get("tags", []) for c in nb["cells"]) == 1, job
        assert list(pm.inspect_notebook(str(jobs.job_notebook(job)))) == list(jobs.JOB_PARAMS[job])
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{job}: outputs committed"
