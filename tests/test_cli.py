"End to end: the console scripts train, evaluate and sample; every bad input gets one clear line."
import dataclasses, inspect, json, os, shutil
from importlib import import_module
from pathlib import Path
import pytest
from fastcore.script import anno_parser
from conftest import run_cli, sha, TINY, one_error_line, console_scripts
from sma_kit import config as C
from sma_kit.cli import RENAME




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "One tiny generalist trained with the BPE tokenizer through the CLI."
    from conftest import PIGS
    root = tmp_path_factory.mktemp("e2e") / "data"
    (root / "general").mkdir(parents=True); (root / "general" / "pigs.txt").write_text(PIGS * 2)
    (root / "math").mkdir(); (root / "math" / "q.txt").write_text("".join(f"{i} + {i} = {2 * i}\n" for i in range(600)))
    out = root.parent / "gen"
    p = run_cli("sma_train_generalist", "--data_dir", root, "--output_dir", out, "--tokenizer", "bpe", "--vocab_size", 400, *TINY)
    return root, out, p


def test_train_writes_model_and_reports_val_loss(trained):
    root, out, p = trained
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in out.iterdir()) == ["config.json", "metrics.jsonl", "model.safetensors", "tokenizer.json", "train_state"]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("final validation loss ") and str(out) in last
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    best = min(r["val_loss"] for r in recs if "val_loss" in r)
    assert f"{best:.4f}" in last
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["d_model"] == 32 and cfg["ffn_dim"] == 64 and cfg["max_seq_len"] == 32 and cfg["vocab_size"] <= 400


def test_eval_lm_per_domain_table_and_json(trained, tmp_path):
    root, out, _ = trained
    p = run_cli("sma_eval_lm", "--model_dir", out, "--data_dir", root, "--json", tmp_path / "ev.json")
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "ev.json").read_text())["domains"]
    assert list(res) == ["general", "math"]
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    best = min(r["val_loss"] for r in recs if "val_loss" in r)
    assert abs(res["general"]["val_loss"] - best) < 1e-5, "eval_lm and training measure validation loss the same way"
    assert "| general |" in p.stdout and "| math |" in p.stdout


def test_generate_is_seeded(trained):
    _, out, _ = trained
    a = run_cli("sma_generate", "--model_dir", out, "--prompt", "3 little", "--seed", 5, "--max_new_tokens", 12)
    b = run_cli("sma_generate", "--model_dir", out, "--prompt", "3 little", "--seed", 5, "--max_new_tokens", 12)
    g = run_cli("sma_generate", "--model_dir", out, "--prompt", "3 little", "--temperature", 0, "--max_new_tokens", 12)
    assert a.returncode == b.returncode == g.returncode == 0, a.stderr + g.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("3 little") and len(a.stdout) > len("3 little")


def tensors(model_dir):
    from safetensors.numpy import load_file
    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_resume_continues_to_the_same_weights(tiny_corpus, tmp_path):
    "A run interrupted at step 3 (--stop_after) and resumed ends with the same weights, tensor for tensor, as a straight run."
    import numpy as np
    args = ["--data_dir", tiny_corpus, "--tokenizer", "byte", *TINY]
    full = run_cli("sma_train_generalist", "--output_dir", tmp_path / "a", *args)
    assert full.returncode == 0, full.stderr
    part = run_cli("sma_train_generalist", "--output_dir", tmp_path / "b", "--stop_after", 3, *args)
    assert part.returncode == 130 and "interrupted at step 3 of 6" in part.stdout, (part.returncode, part.stdout, part.stderr[-2000:])
    a = tensors(tmp_path / "a")
    assert set(tensors(tmp_path / "b")) == set(a) and any(not np.array_equal(a[k], v) for k, v in tensors(tmp_path / "b").items()), \
        "the interrupted run's weights differ from the finished run's (else this test could not fail)"
    res = run_cli("sma_train_generalist", "--output_dir", tmp_path / "b", "--resume", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    b = tensors(tmp_path / "b")
    assert set(a) == set(b)
    for k in a: np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # a resume with another schedule is refused...
    p = run_cli("sma_train_generalist", "--output_dir", tmp_path / "b", "--resume", *[x if x != 6 else 3 for x in args])
    one_error_line(p, "max_steps")
    # ...and retraining into a dir that holds a model needs --overwrite
    p = run_cli("sma_train_generalist", "--output_dir", tmp_path / "a", *args)
    one_error_line(p, tmp_path / "a", "--resume", "--overwrite")


def test_overwrite_replaces_tokenizer_config_and_weights_together(tiny_corpus, tmp_path):
    "Ctrl-C in an --overwrite run before its first evaluation leaves the old model whole; a finished one has the new tokenizer with its weights."
    import signal, subprocess, sys, time
    import numpy as np
    from conftest import PIGS
    from sma_kit.backend import load_backend
    B, out = load_backend("torch"), tmp_path / "gen"
    assert run_cli("sma_train_generalist", "--data_dir", tiny_corpus, "--output_dir", out, "--tokenizer", "byte", *TINY).returncode == 0
    old_tok, old_w = (out / "tokenizer.json").read_text(), tensors(out)
    other = tmp_path / "other" / "general"; other.mkdir(parents=True); (other / "t.txt").write_text(PIGS.replace("pigs", "cows") * 3)
    bpe = ["--data_dir", other.parent, "--output_dir", out, "--overwrite", "--tokenizer", "bpe", "--vocab_size", 300]
    (out / "metrics.jsonl").unlink()     # the new run's first log line is the sign that it trains
    run_cli("sma_train_generalist", "--help")   # writes the runner script
    from conftest import _RUNNERS
    proc = subprocess.Popen([sys.executable, str(_RUNNERS / "sma_train_generalist"), *map(str, bpe), *map(str, TINY[:-7]),
                             "--max_steps", "100000", "--eval_every", "50000", "--log_every", "1", "--warmup_steps", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        give_up = time.monotonic() + 600   # a hang guard only: the sync is the log line
        while proc.poll() is None and time.monotonic() < give_up and not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().strip()):
            time.sleep(0.05)
        assert proc.poll() is None and (out / "metrics.jsonl").is_file(), proc.communicate() if proc.poll() is not None else "no log line"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None: proc.kill()
    assert proc.returncode == 130 and "interrupted" in stdout, (proc.returncode, stdout, stderr[-2000:])
    model, tok = B.load_model(out, "cpu")
    assert (out / "tokenizer.json").read_text() == old_tok and tok.vocab_size == model.cfg.vocab_size
    new_w = tensors(out)
    assert set(new_w) == set(old_w) and all(np.array_equal(old_w[k], new_w[k]) for k in old_w)
    done = run_cli("sma_train_generalist", *bpe, *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    model, tok = B.load_model(out, "cpu")
    assert (out / "tokenizer.json").read_text() != old_tok and tok.vocab_size == model.cfg.vocab_size == len(tensors(out)["embed.weight"])
    assert (out / "tokenizer.json").read_text() == (out / "train_state" / "tokenizer.json").read_text()


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_data_dirs(tmp_path, tiny_corpus):
    base = ["--output_dir", tmp_path / "out", "--tokenizer", "byte", *TINY]
    one_error_line(run_cli("sma_train_generalist", "--data_dir", tmp_path / "missing", *base), tmp_path / "missing", "does not exist")
    (tmp_path / "empty").mkdir()
    one_error_line(run_cli("sma_train_generalist", "--data_dir", tmp_path / "empty", *base), tmp_path / "empty", "no text files")
    nogen = tmp_path / "nogen"; (nogen / "math").mkdir(parents=True); (nogen / "math" / "a.txt").write_text("x" * 500)
    one_error_line(run_cli("sma_eval_lm", "--model_dir", tmp_path, "--data_dir", nogen), "model dir" if False else tmp_path)
    shutil.rmtree(tiny_corpus / "general"); (tiny_corpus / "general").mkdir(); (tiny_corpus / "general" / "LICENSE").write_text("MIT")
    one_error_line(run_cli("sma_train_generalist", "--data_dir", tiny_corpus, *base), tiny_corpus / "general", "no text files")
    assert not (tmp_path / "out").exists(), "nothing is written when the input is bad"


@pytest.mark.parametrize("name,content,msg", [
    ("empty.txt", b"", "empty file"),
    ("blank.txt", b"\n  \n", "empty file"),
    ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("latin1.txt", "caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1"), "not valid UTF-8"),
    ("broken.jsonl", b'{"text": "ok"}\n{"text": ', "invalid JSON"),
])
def test_bad_files(tiny_corpus, tmp_path, name, content, msg):
    bad = tiny_corpus / "general" / name
    bad.write_bytes(content)
    p = run_cli("sma_train_generalist", "--data_dir", tiny_corpus, "--output_dir", tmp_path / "out", "--tokenizer", "byte", *TINY)
    one_error_line(p, bad, msg)
    assert not (tmp_path / "out").exists()


def test_seq_len_longer_than_corpus(tmp_path):
    d = tmp_path / "small"; d.mkdir(); (d / "a.txt").write_text("just a few words of text, " * 8)
    p = run_cli("sma_train_generalist", "--data_dir", d, "--output_dir", tmp_path / "out", "--tokenizer", "byte",
                *[a if a != 32 else 64 for a in TINY])
    one_error_line(p, "seq_len")
    assert not (tmp_path / "out").exists()


def test_unwritable_output_dir(tiny_corpus, tmp_path):
    f = tmp_path / "a_file"; f.write_text("not a dir")
    p = run_cli("sma_train_generalist", "--data_dir", tiny_corpus, "--output_dir", f / "out", "--tokenizer", "byte", *TINY)
    one_error_line(p, f / "out", "output dir")
    assert f.read_text() == "not a dir"


def test_broken_model_dirs(trained, tmp_path):
    root, out, _ = trained
    before = {p.name: sha(p) for p in out.iterdir() if p.is_file()}
    def broken(name, fix):
        d = tmp_path / name; shutil.copytree(out, d); fix(d); return d
    cases = [
        (broken("noweights", lambda d: (d / "model.safetensors").unlink()), "model.safetensors", "not found"),
        (broken("truncated", lambda d: (d / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:-100])), "model.safetensors", "truncated"),
        (broken("garbage", lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 1000)), "model.safetensors", "not a safetensors"),
        (broken("notok", lambda d: (d / "tokenizer.json").unlink()), "tokenizer.json", "not found"),
        (broken("badcfg", lambda d: (d / "config.json").write_text("{oops")), "config.json", "not valid JSON"),
        (tmp_path / "nowhere", "nowhere", "model dir not found"),
    ]
    # a tokenizer whose vocabulary does not match the model
    from sma_kit.tokenizer import byte_tokenizer
    cases.append((broken("vocab", lambda d: byte_tokenizer().save(d / "tokenizer.json")), "tokenizer.json", "does not match"))
    # weights of another shape under the right names
    def other_shape(d):
        cfg = json.loads((d / "config.json").read_text()); cfg["d_model"] = 64; cfg["ffn_dim"] = 128
        (d / "config.json").write_text(json.dumps(cfg))
    cases.append((broken("shape", other_shape), "model.safetensors", "shape"))
    for d, needle, msg in cases:
        one_error_line(run_cli("sma_generate", "--model_dir", d, "--prompt", "hi"), needle, msg)
    one_error_line(run_cli("sma_eval_lm", "--model_dir", tmp_path / "truncated", "--data_dir", root), "truncated")
    assert before == {p.name: sha(p) for p in out.iterdir() if p.is_file()}


def test_bad_flags(tiny_corpus, tmp_path):
    one_error_line(run_cli("sma_train_generalist", "--data_dir", tiny_corpus), "--output_dir")
    one_error_line(run_cli("sma_train_generalist", "--data_dir", tiny_corpus, "--output_dir", tmp_path / "o", *TINY, "--n_heads", 3), "n_heads")
    one_error_line(run_cli("sma_train_generalist", "--data_dir", tiny_corpus, "--output_dir", tmp_path / "o", *TINY, "--tokenizer", "nope"), "tokenizer")
    one_error_line(run_cli("sma_train_generalist", "--data_dir", tiny_corpus, "--output_dir", tmp_path / "o", *TINY, "--device", "tpu9"), "tpu9")
    assert not (tmp_path / "o").exists()


def test_demo_runs_on_the_builtin_corpus(tmp_path):
    "The README's demo, shortened: built-in corpus, generalist, specialists, table, gates, sample."
    p = run_cli("sma_demo", "--output_dir", tmp_path / "demo", "--max_steps", 8, "--specialist_steps", 6, "--batch_size", 4, "--quiet",
                "--device", "cpu", timeout=1800)   # a shared 2-core machine can be slow; not a speed check
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(res["eval"]) == {"generalist", "shiftable soft", "shiftable top-1"}
    assert set(res["eval"]["generalist"]) == {"general", "datascience", "python"}
    assert res["shiftable"]["specialists"] == ["datascience", "python"]
    assert "| python |" in p.stdout and "routing accuracy" in p.stdout and "sample: The function returns" in p.stdout
    for d in ("general", "datascience", "python"):
        assert any((tmp_path / "demo" / "data" / d).glob("*.txt"))


def test_jax_backend_end_to_end_and_cross_backend(tiny_corpus, tmp_path):
    "--backend jax trains a generalist and specialists, samples and evaluates; its checkpoints evaluate the same in PyTorch."
    pytest.importorskip("jax")
    out = tmp_path / "jaxgen"
    p = run_cli("sma_train_generalist", "--data_dir", tiny_corpus, "--output_dir", out, "--tokenizer", "byte", "--backend", "jax", *TINY)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1].startswith("final validation loss")
    g = run_cli("sma_generate", "--model_dir", out, "--prompt", "3 little", "--backend", "jax", "--temperature", 0, "--max_new_tokens", 8)
    assert g.returncode == 0 and g.stdout.startswith("3 little"), g.stderr[-2000:]
    ej = run_cli("sma_eval_lm", "--model_dir", out, "--data_dir", tiny_corpus, "--backend", "jax", "--json", tmp_path / "j.json")
    et = run_cli("sma_eval_lm", "--model_dir", out, "--data_dir", tiny_corpus, "--json", tmp_path / "t.json")
    assert ej.returncode == 0 and et.returncode == 0, ej.stderr[-2000:] + et.stderr[-2000:]
    j, t = (json.loads((tmp_path / f).read_text())["domains"] for f in ("j.json", "t.json"))
    for d in ("general", "math"):
        assert abs(j[d]["val_loss"] - t[d]["val_loss"]) < 1e-4, (d, j[d], t[d])
    # specialists with JAX on the JAX generalist; both backends evaluate the shiftable model alike, under another routing too
    sp = tmp_path / "jaxspec"
    p = run_cli("sma_train_specialists", "--generalist_ckpt", out, "--output_dir", sp, "--data_dir", tiny_corpus, "--backend", "jax",
                "--batch_size", 4, "--max_steps", 6, "--eval_every", 3, "--warmup_steps", 2, "--expert_site", "both", "--branch", "lora", "--quiet")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "specialists math" in p.stdout and (sp / "specialists.json").is_file()
    for routing in ("soft", "hard"):
        ej = run_cli("sma_eval_lm", "--model_dir", sp, "--data_dir", tiny_corpus, "--backend", "jax", "--routing", routing, "--json", tmp_path / "sj.json")
        et = run_cli("sma_eval_lm", "--model_dir", sp, "--data_dir", tiny_corpus, "--routing", routing, "--json", tmp_path / "st.json")
        assert ej.returncode == 0 and et.returncode == 0, ej.stderr[-2000:] + et.stderr[-2000:]
        j, t = (json.loads((tmp_path / f).read_text()) for f in ("sj.json", "st.json"))
        assert j["routing"] == t["routing"] == routing and "routing accuracy" in ej.stdout
        for d in ("general", "math"):
            assert abs(j["domains"][d]["val_loss"] - t["domains"][d]["val_loss"]) < 1e-4, (routing, d, j["domains"][d], t["domains"][d])
            assert abs(j["gates"]["accuracy"][d] - t["gates"]["accuracy"][d]) < 0.01
    gj = run_cli("sma_generate", "--model_dir", sp, "--prompt", "3 little", "--backend", "jax", "--temperature", 0, "--max_new_tokens", 8, "--routing", "topk")
    gt = run_cli("sma_generate", "--model_dir", sp, "--prompt", "3 little", "--temperature", 0, "--max_new_tokens", 8, "--routing", "topk")
    assert gj.returncode == 0 and gj.stdout == gt.stdout, (gj.stdout, gt.stdout, gj.stderr[-1000:])
    one_error_line(run_cli("sma_eval_lm", "--model_dir", out, "--data_dir", tiny_corpus, "--backend", "jax", "--routing", "hard"), "applies to a shiftable model")
    one_error_line(run_cli("sma_train_specialists", "--generalist_ckpt", sp, "--output_dir", tmp_path / "s2", "--data_dir", tiny_corpus, "--backend", "jax"),
                   "already a shiftable model")
    one_error_line(run_cli("sma_train_specialists", "--generalist_ckpt", out, "--output_dir", tmp_path / "s3", "--data_dir", tiny_corpus, "--backend", "jax",
                           "--mesh", "1,2", "--device", "cpu"), "does not divide the 1 available cpu devices")
    one_error_line(run_cli("sma_train_generalist", "--data_dir", tiny_corpus, "--output_dir", tmp_path / "x", "--backend", "tf"), "--backend")


# ------------------------------------------------------------------------------------------ flags from the config
MINE = {n: t for n, t in console_scripts().items() if t.split(":")[0] in ("sma_kit.cli", "sma_kit.project_cli")}
CONFIGS = (C.ModelConfig, C.TrainConfig, C.ShiftConfig, C.SampleConfig)
# Flags whose default deliberately differs from their config field's (the class named: `batch_size` is a field of two);
# each reason is in nbs/50_cli.ipynb's prose.
OVERRIDES = {
    ("sma_train_generalist", "vocab_size"): (C.ModelConfig, "the BPE vocabulary to train; ModelConfig.vocab_size is read off the tokenizer"),
    ("sma_train_specialists", "seq_len"): (C.TrainConfig, "None: the generalist's max_seq_len"),
    ("sma_eval_lm", "seq_len"): (C.TrainConfig, "None: the model's max_seq_len"),
    ("sma_generate", "routing"): (C.ShiftConfig, "None: the routing the model was trained with"),
    ("sma_eval_lm", "routing"): (C.ShiftConfig, "None: the routing the model was trained with"),
    ("sma_demo", "max_steps"): (C.TrainConfig, "600 steps: the demo's minutes-long schedule"),
    ("sma_demo", "batch_size"): (C.TrainConfig, "16 windows: the demo's small model"),
}


def script_fn(name):
    mod, fn = MINE[name].split(":")
    return getattr(import_module(mod), fn)


def field_defaults(flag) -> list:
    "Defaults of every scalar config field named `flag` (after the historical renames)."
    name = RENAME.get(flag, flag)
    return [C.field_flags(cls)[name][1] for cls in CONFIGS if name in C.field_flags(cls)]


@pytest.mark.parametrize("name", sorted(MINE))
def test_flag_defaults_are_the_config_defaults(name):
    acts = [a for a in anno_parser(script_fn(name))._actions if a.dest not in ("help", "pdb", "xtra")]
    checked = 0
    for a in acts:
        fd = field_defaults(a.dest)
        if not fd: continue
        checked += 1
        if (name, a.dest) in OVERRIDES:
            cls = OVERRIDES[name, a.dest][0]
            assert a.default != C.field_flags(cls)[RENAME.get(a.dest, a.dest)][1], f"{name} --{a.dest}: no longer an override of {cls.__name__}, drop it from OVERRIDES"
        else: assert a.default in fd, f"{name} --{a.dest} defaults to {a.default!r}, its config field to {fd}"
    assert checked or name in ("sma_specialists", "sma_add_specialist", "sma_delete_specialist")


def test_training_scripts_share_the_training_flags():
    "Every TrainConfig field is a flag of both training scripts, the historical spellings too."
    for name, extra in (("sma_train_generalist", ("--dim_feedforward", "--tokenizer", "--vocab_size")),
                        ("sma_train_specialists", ("--tokenizer_path", "--generalist_ckpt", "--datascience_dir", "--business_dir", "--general_dir", "--train_embeddings"))):
        h = anno_parser(script_fn(name)).format_help()
        for f in dataclasses.fields(C.TrainConfig): assert f"--{f.name} " in h, (name, f.name)
        for flag in extra: assert flag in h, (name, flag)


def test_backends_sample_with_the_sample_config_defaults():
    from sma_kit.backend import load_backend
    want = {f.name: f.default for f in dataclasses.fields(C.SampleConfig)}
    for b in ("torch", "jax"):
        ps = inspect.signature(load_backend(b).complete).parameters
        assert {k: ps[k].default for k in want} == want, b


# ------------------------------------------------------------------------------------------ one line, never a traceback
SITE = """
import os, sys
for m in os.environ.get("SMA_TEST_BLOCK", "").split(","):
    if m: sys.modules[m] = None          # what `import` then treats as not installed
if os.environ.get("SMA_TEST_CTRL_C"):    # Ctrl-C as soon as the command touches this folder
    _where = os.environ["SMA_TEST_CTRL_C"]
    def _hook(event, args):
        if event in ("open", "os.scandir", "os.listdir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
            if os.fsdecode(args[0]).startswith(_where): raise KeyboardInterrupt
    sys.addaudithook(_hook)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("site"); (d / "sitecustomize.py").write_text(SITE)
    return d


def run_with(site, name, *args, **env):
    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    return run_cli(name, *args, env={"PYTHONPATH": path, **env})


def fake_project(root: Path) -> dict:
    "A model dir and a project folder to point the scripts at (their contents are never read past the first file)."
    model = root / "model"; model.mkdir(parents=True)
    for f in ("config.json", "tokenizer.json", "model.safetensors"): (model / f).write_text("{}")
    (root / "data" / "general").mkdir(parents=True); (root / "data" / "general" / "a.txt").write_text("some text " * 50)
    (root / "data" / "math").mkdir(); (root / "data" / "math" / "a.txt").write_text("1 + 1 = 2\n" * 50)
    return {
        "sma_train_generalist": ["--data_dir", root / "data", "--output_dir", root / "o1", "--tokenizer", "byte", *TINY],
        "sma_train_specialists": ["--generalist_ckpt", model, "--data_dir", root / "data", "--output_dir", root / "o2"],
        "sma_generate": ["--model_dir", model, "--prompt", "hi"],
        "sma_eval_lm": ["--model_dir", model, "--data_dir", root / "data"],
        "sma_demo": ["--data_dir", root / "data", "--output_dir", root / "o3", "--max_steps", 2, "--quiet"],
        "sma_specialists": ["--project_dir", root],
        "sma_add_specialist": ["--project_dir", root, "--name", "math"],
        "sma_delete_specialist": ["--project_dir", root, "--name", "math"],
    }


def test_every_script_is_covered(tmp_path):
    assert set(fake_project(tmp_path)) == set(MINE) == {"sma_train_generalist", "sma_train_specialists", "sma_generate", "sma_eval_lm", "sma_demo",
                         "sma_specialists", "sma_add_specialist", "sma_delete_specialist"}


@pytest.mark.parametrize("name", sorted(MINE))
def test_ctrl_c_is_one_line_and_130(site, tmp_path, name):
    p = run_with(site, name, *fake_project(tmp_path)[name], SMA_TEST_CTRL_C=str(tmp_path))
    assert p.returncode == 130, (p.returncode, p.stdout[-1000:], p.stderr[-2000:])
    assert [l for l in p.stderr.splitlines() if l.strip()] == ["interrupted"], p.stderr[-2000:]


WITH_BACKEND = ["sma_train_generalist", "sma_train_specialists", "sma_generate", "sma_eval_lm", "sma_demo"]


@pytest.mark.parametrize("name", WITH_BACKEND)
def test_missing_jax_is_one_line(site, tmp_path, name):
    p = run_with(site, name, *fake_project(tmp_path)[name], "--backend", "jax", SMA_TEST_BLOCK="jax")
    one_error_line(p, "jax", "pip install 'sma_kit[jax]'")


@pytest.mark.parametrize("name", WITH_BACKEND)
def test_missing_torch_xla_is_one_line(site, tmp_path, name):
    p = run_with(site, name, *fake_project(tmp_path)[name], "--device", "xla", SMA_TEST_BLOCK="torch_xla")
    one_error_line(p, "--device xla", "pip install 'sma_kit[xla]'")


# the other console scripts: each missing optional package and Ctrl-C give one line
def other_project(root: Path, model=None) -> dict:
    "Arguments that make each of the other console scripts start real work on `root` (a `fake_project`)."
    fake_project(root)
    model = model or root / "model"
    if not (root / "outputs" / "general").exists(): shutil.copytree(root / "model", root / "outputs" / "general")
    return {
        "sma_evaluate": ["--model_dirs", model, "--datasets", "gsm8k", "--sample_size", 1, "--output_dir", root / "ev", "--quiet", "--device", "cpu"],
        "sma_run_job": ["train_generalist", "--output_dir", root / "job", "--p", "data_dir", root / "data", "--quiet"],
        "sma_kaggle_prepare": ["--user", "someone", "--out_dir", root / "kaggle", "--install", "sma_kit==0.0.1"],
        "sma_rag": ["index", "--docs", root / "data" / "general", "--store", root / "store"],
        "sma_serve": ["--project_dir", root, "--port", 0],
        "sma_orchestrate": ["--prompt", "what is 1 + 1?", "--project_dir", root],
        "sma_orchestrate_eval": ["--project_dir", root, "--data_dir", root / "data", "--gsm8k", 0],
        "sma_extract": ["--model_dir", model, "--output_dir", root / "extracted"],
        "sma_train_encoder": ["--data_dir", root / "data", "--output_dir", root / "enc", "--tokenizer", "byte", *TINY],
        "sma_train_router": ["--models", f"{model},{model}", "--datasets", root / "data" / "math", "--output_dir", root / "router",
                             "--max_steps", 2, "--device", "cpu"],
    }


OTHERS = sorted(set(console_scripts()) - set(MINE) - {"sma_code_eval"})   # sma_code_eval: tests/test_code_eval.py


def test_every_other_script_is_covered(tmp_path):
    assert sorted(other_project(tmp_path)) == OTHERS


@pytest.mark.parametrize("name", OTHERS)
def test_other_scripts_ctrl_c_is_one_line_and_130(site, tmp_path, name):
    p = run_with(site, name, *other_project(tmp_path)[name], SMA_TEST_CTRL_C=str(tmp_path))
    assert p.returncode == 130, (p.returncode, p.stdout[-1000:], p.stderr[-2000:])
    assert [l for l in p.stderr.splitlines() if l.strip()] == ["interrupted"], p.stderr[-2000:]


MISSING = [("sma_evaluate", "torch", "torch"), ("sma_run_job", "papermill", "jobs"), ("sma_rag", "bm25s", "rag"),
           ("sma_serve", "fastapi", "serve"), ("sma_serve", "uvicorn", "serve"),
           ("sma_specialists", "torch", "torch"), ("sma_add_specialist", "torch", "torch"), ("sma_delete_specialist", "torch", "torch")]


@pytest.mark.parametrize("name,package,extra", MISSING)
def test_missing_optional_package_is_one_line(site, tmp_path, trained, name, package, extra):
    "A real model and project, so that the script gets as far as needing the package."
    _, gen, _ = trained
    root = tmp_path / "p"
    (root / "outputs").mkdir(parents=True); shutil.copytree(gen, root / "outputs" / "general")
    args = other_project(root, gen)[name] if name in OTHERS else fake_project(root)[name]
    p = run_with(site, name, *args, SMA_TEST_BLOCK=package)
    if name in ("sma_specialists", "sma_delete_specialist"):   # a status, or deleting what is not there, needs no torch: never a traceback
        assert "Traceback" not in p.stderr + p.stdout and (p.returncode == 0 or len(p.stderr.strip().splitlines()) == 1), p.stderr[-3000:]
        return
    assert p.returncode != 0 and "Traceback" not in p.stderr + p.stdout, (p.returncode, p.stderr[-3000:])
    lines = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith(("train:", "\r"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-3000:]
    assert f"pip install 'sma_kit[{extra}]'" in lines[0], lines[0]
