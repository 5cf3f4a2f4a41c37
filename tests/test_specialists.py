"Shiftable specialists end to end: CLI training, project manager lifecycle, bad input, kill -9 during an add."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import run_cli, sha, TINY, PIGS, one_error_line

WORDS = {"general": "the cat sat on the mat and the dog ran in the park . ",
         "math": "12 + 30 = 42 and 7 * 6 = 42 so x = 42 . ",
         "law": "the court held that the contract was void under section 12 . "}
SETTINGS = dict(model=dict(d_model=32, n_layers=2, n_heads=2, ffn_dim=64), tokenizer="byte", seq_len=32, batch_size=8,
                lr=3e-3, generalist_steps=20, specialist_steps=20, specialist_lr=3e-3, eval_every=10, device="cpu")




def make_project(root, domains=("general", "math"), settings=SETTINGS):
    for d in domains:
        (root / "data" / d).mkdir(parents=True, exist_ok=True)
        (root / "data" / d / "a.txt").write_text(WORDS[d] * 200)
    (root / "sma_project.json").write_text(json.dumps(settings))
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("proj"))
    p = run_cli("sma_specialists", "--project_dir", root, "--init")
    assert p.returncode == 0, p.stderr
    return root


def test_cli_lifecycle(project):
    st = run_cli("sma_specialists", "--project_dir", project, "--json")
    assert json.loads(st.stdout)["specialists"] == ["math"]
    (project / "data" / "law").mkdir(); (project / "data" / "law" / "l.txt").write_text(WORDS["law"] * 200)
    p = run_cli("sma_add_specialist", "--project_dir", project, "--name", "law", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "added law" in p.stdout and json.loads((project / "outputs/shiftable/specialists.json").read_text())["specialists"] == ["math", "law"]
    g = run_cli("sma_generate", "--model_dir", project / "outputs/shiftable", "--prompt", "the court", "--routing", "topk", "--seed", 0, "--max_new_tokens", 10)
    assert g.returncode == 0 and g.stdout.startswith("the court"), g.stderr
    ev = run_cli("sma_eval_lm", "--model_dir", project / "outputs/shiftable", "--data_dir", project / "data", "--json", project / "ev.json")
    assert ev.returncode == 0, ev.stderr
    res = json.loads((project / "ev.json").read_text())
    assert list(res["domains"]) == ["general", "law", "math"] and set(res["gates"]["accuracy"]) == {"general", "law", "math", "overall"}
    t0 = time.perf_counter()
    d = run_cli("sma_delete_specialist", "--project_dir", project, "--name", "law")
    assert d.returncode == 0, d.stderr
    assert not (project / "data/law").exists() and any((project / "data/.trash").glob("law-*/l.txt"))
    # bad input: each one line, nothing changed
    before = sha(project / "outputs/shiftable/model.safetensors")
    one_error_line(run_cli("sma_delete_specialist", "--project_dir", project, "--name", "math"), "last specialist")
    one_error_line(run_cli("sma_delete_specialist", "--project_dir", project, "--name", "law"), "unknown specialist")
    one_error_line(run_cli("sma_add_specialist", "--project_dir", project, "--name", "../x"), "path")
    one_error_line(run_cli("sma_add_specialist", "--project_dir", project, "--name", "General"), "invalid")
    one_error_line(run_cli("sma_add_specialist", "--project_dir", project, "--name", "math"), "already exists")
    one_error_line(run_cli("sma_add_specialist", "--project_dir", project, "--name", "bio"), "no corpus folder")
    (project / "data" / "empty").mkdir(); (project / "data" / "empty" / "README.md").write_text("notes")
    one_error_line(run_cli("sma_add_specialist", "--project_dir", project, "--name", "empty"), "no text files")
    (project / "data" / "bin").mkdir(); (project / "data" / "bin" / "x.txt").write_bytes(b"\x00\x01\x02" * 100)
    one_error_line(run_cli("sma_add_specialist", "--project_dir", project, "--name", "bin"), "binary")
    assert sha(project / "outputs/shiftable/model.safetensors") == before


def test_train_specialists_original_flags(tmp_path):
    root = make_project(tmp_path, ("general", "math", "law"))
    gen = tmp_path / "gen"
    p = run_cli("sma_train_generalist", "--data_dir", root / "data/general", "--output_dir", gen, "--tokenizer", "byte", *TINY)
    assert p.returncode == 0, p.stderr
    args = ["--generalist_ckpt", gen / "model.safetensors", "--tokenizer_path", gen / "tokenizer.json",
            "--datascience_dir", root / "data/math", "--business_dir", root / "data/law", "--general_dir", root / "data/general",
            "--seq_len", 32, "--batch_size", 4, "--max_steps", 6, "--eval_every", 3, "--warmup_steps", 2, "--quiet"]
    p = run_cli("sma_train_specialists", "--output_dir", tmp_path / "shift", *args)
    assert p.returncode == 0, p.stderr
    sc = json.loads((tmp_path / "shift/specialists.json").read_text())
    assert sc["specialists"] == ["datascience", "business"] and "trainable" in p.stdout
    assert p.stdout.strip().splitlines()[-1].startswith("final validation loss")
    # the generalist is untouched; a tokenizer that is not the generalist's is refused
    from sma_kit.tokenizer import byte_tokenizer
    byte_tokenizer(["x"]).save(tmp_path / "other.json")
    bad = [a if a != gen / "tokenizer.json" else tmp_path / "other.json" for a in args]
    one_error_line(run_cli("sma_train_specialists", "--output_dir", tmp_path / "s2", *bad), "other.json", "not the tokenizer")
    one_error_line(run_cli("sma_train_specialists", "--output_dir", tmp_path / "s3", "--generalist_ckpt", tmp_path / "shift", "--data_dir", root / "data"), "already a shiftable")
    one_error_line(run_cli("sma_train_specialists", "--output_dir", tmp_path / "s4", "--generalist_ckpt", gen, "--data_dir", root / "data", "--routing", "random"), "routing")
    assert not any((tmp_path / n).exists() for n in ("s2", "s3", "s4"))


KILLER = """
import sys, json
from sma_kit.manager import SpecialistManager, ProjectSettings
s = ProjectSettings(**json.loads(open(sys.argv[2]).read()))
SpecialistManager(sys.argv[1], s, progress=False, log=None).add_specialist("law", steps=100000)
"""


def test_kill9_during_add_leaves_previous_model(tmp_path):
    from sma_kit.manager import SpecialistManager, ProjectSettings
    root = make_project(tmp_path)
    mgr = SpecialistManager(root, ProjectSettings(**SETTINGS), progress=False, log=None)
    mgr.ensure_initialized()
    before = {p.name: sha(p) for p in (root / "outputs/shiftable").iterdir() if p.is_file()}
    (root / "data" / "law").mkdir(); (root / "data" / "law" / "l.txt").write_text(WORDS["law"] * 200)
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(root), str(root / "sma_project.json")])
    deadline = time.time() + 120
    while time.time() < deadline and not any((root / "outputs").glob(".shiftable.*.tmp/metrics.jsonl")):
        time.sleep(0.2)
    assert any((root / "outputs").glob(".shiftable.*.tmp")), "the add never started training"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert {p.name: sha(p) for p in (root / "outputs/shiftable").iterdir() if p.is_file()} == before
    m2 = SpecialistManager(root, ProjectSettings(**SETTINGS), progress=False, log=None)
    assert m2.list_specialists() == ["math"] and m2.generate("the cat", max_new_tokens=4, seed=0)["n_tokens"] >= 1
    r = m2.add_specialist("law")  # the retry works and cleans the leftovers
    assert r["specialists"] == ["math", "law"] and not list((root / "outputs").glob(".shiftable.*"))


HOLDER = """
import sys, time
from sma_kit.manager import SpecialistManager
m = SpecialistManager(sys.argv[1], progress=False, log=None)
with m.lock():
    print("locked", flush=True); time.sleep(3)
"""


def test_changes_are_serialised_by_the_lock(tmp_path):
    from sma_kit.manager import SpecialistManager, ProjectSettings
    root = make_project(tmp_path, ("general", "math", "law"))
    mgr = SpecialistManager(root, ProjectSettings(**SETTINGS), progress=False, log=None)
    mgr.ensure_initialized()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.perf_counter()
    mgr.delete_specialist("law")
    waited = time.perf_counter() - t0
    holder.wait()
    assert waited > 1.5, f"delete did not wait for the lock ({waited:.2f} s)"
    assert mgr.list_specialists() == ["math"]


# -- interrupts, swaps and models the manager did not train ---------------------------------------------------------
SLOW = {**SETTINGS, "eval_every": 50}     # a metrics line every 10 steps, the first evaluation at step 50


def _lines(p):
    "The complete metrics lines of every metrics.jsonl under `p` (temporary and build folders included)."
    out = []
    try: files = list(Path(p).glob("**/metrics*.jsonl"))
    except OSError: return out   # a folder renamed away while we looked (a swap)
    for f in files:
        try: out += [json.loads(l) for l in f.read_text().splitlines() if l.strip().endswith("}")]
        except (OSError, ValueError): pass
    return out


def _snapshot(root):
    "File -> sha of the committed models (what an interruption must not change)."
    return {str(p.relative_to(root)): sha(p) for d in ("outputs/general", "outputs/shiftable") if (root / d).is_dir()
            for p in sorted((root / d).rglob("*")) if p.is_file() and "metrics" not in p.name}


def _interrupt(cmd, root, ready, env=None, timeout=300):
    "Start `cmd`, wait until a metrics line satisfies `ready`, send SIGINT; (returncode, stdout, stderr)."
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    deadline = time.time() + timeout
    try:
        while not any(ready(r) for r in _lines(root / "outputs")):
            assert proc.poll() is None, f"finished before the interrupt: {proc.communicate()}"
            assert time.time() < deadline, "no progress marker"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None: proc.kill()
    return proc.returncode, out, err


def _cli(name):
    from conftest import BIN
    exe = BIN / name
    return [exe] if exe.exists() else [sys.executable, "-c", f"import sys; from sma_kit.cli import {name}; sys.exit({name}())"]


def _initialised(tmp_path, domains=("general", "math"), settings=SLOW):
    from sma_kit.manager import SpecialistManager
    root = make_project(tmp_path / "p", domains, settings)
    SpecialistManager(root, progress=False, log=None).ensure_initialized()
    return root


@pytest.mark.parametrize("when", ["before_eval", "after_eval"])
def test_sigint_during_add_keeps_the_previous_model(tmp_path, when):
    from sma_kit.manager import SpecialistManager
    root = _initialised(tmp_path)
    before, ref = _snapshot(root), SpecialistManager(root, progress=False, log=None).generate("the cat", max_new_tokens=6, seed=0, temperature=0)
    (root / "data" / "law").mkdir(); (root / "data" / "law" / "l.txt").write_text(WORDS["law"] * 200)
    ready = (lambda r: r["step"] >= 10 and "val_loss" not in r) if when == "before_eval" else (lambda r: "val_loss" in r and r["step"] >= 50)
    n0 = len(_lines(root / "outputs"))
    rc, out, err = _interrupt([*_cli("sma_add_specialist"), "--project_dir", root, "--name", "law", "--steps", 100000, "--quiet"],
                              root, lambda r: ready(r) and r["step"] <= 100000 and len(_lines(root / "outputs")) > n0)
    assert rc == 130 and "added" not in out, (rc, out, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err
    assert _snapshot(root) == before
    m = SpecialistManager(root, progress=False, log=None)
    assert m.list_specialists() == ["math"] and m.get_status()["initialized"]
    assert m.generate("the cat", max_new_tokens=6, seed=0, temperature=0)["completion"] == ref["completion"]
    assert not list((root / "outputs").glob(".shiftable.*"))


def test_sigint_in_a_notebook_add_raises_and_keeps_the_model(tmp_path):
    "A kernel interrupt is a SIGINT in the main thread: the add raises KeyboardInterrupt, the model stays."
    from sma_kit.manager import SpecialistManager
    root = _initialised(tmp_path)
    before = _snapshot(root)
    (root / "data" / "law").mkdir(); (root / "data" / "law" / "l.txt").write_text(WORDS["law"] * 200)
    m = SpecialistManager(root, progress=False, log=None)
    import threading
    stop = threading.Event()
    def poke():
        while not stop.wait(0.05):
            if any(r["step"] >= 20 for t in (root / "outputs").glob(".shiftable.*.tmp") for r in _lines(t)):
                os.kill(os.getpid(), signal.SIGINT); return
    t = threading.Thread(target=poke, daemon=True); t.start()
    with pytest.raises(KeyboardInterrupt, match="previous model kept"): m.add_specialist("law", steps=100000)
    stop.set()
    assert _snapshot(root) == before and m.list_specialists() == ["math"]


def test_sigint_during_initial_training_then_resume(tmp_path):
    from sma_kit.manager import SpecialistManager
    root = make_project(tmp_path / "p", ("general", "math"), {**SLOW, "generalist_steps": 100000})
    rc, out, err = _interrupt([*_cli("sma_specialists"), "--project_dir", root, "--init"], root, lambda r: r["step"] >= 20)
    assert rc == 130 and "Traceback" not in err, (rc, out, err)
    st = SpecialistManager(root, progress=False, log=None).get_status()
    assert not st["generalist"] and not st["initialized"] and not (root / "outputs/general").exists()
    stopped = max(r["step"] for r in _lines(root / "outputs"))
    # run again: the generalist resumes where it stopped (its next line continues the count) and is interrupted again
    rc, out, err = _interrupt([*_cli("sma_specialists"), "--project_dir", root, "--init"], root, lambda r: r["step"] > stopped)
    assert rc == 130, (rc, out, err)
    steps = [r["step"] for r in _lines(root / "outputs")]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), steps   # no restart from step 10
    assert not SpecialistManager(root, progress=False, log=None).get_status()["generalist"]


RETRAIN = """
import sys
from sma_kit.manager import SpecialistManager
SpecialistManager(sys.argv[1], progress=False, log=None).ensure_initialized(retrain=True)
print("retrained")
"""


@pytest.mark.parametrize("stage", ["generalist", "shiftable"])
def test_sigint_during_retrain_keeps_tokenizer_config_and_weights(tmp_path, stage):
    from sma_kit.manager import SpecialistManager
    root = _initialised(tmp_path)
    before, ref = _snapshot(root), SpecialistManager(root, progress=False, log=None).generate("the cat", max_new_tokens=6, seed=0, temperature=0)
    # new settings: another tokenizer and shape; the stage to interrupt trains for long
    new = {**SLOW, "tokenizer": "bpe", "vocab_size": 300, "model": {**SLOW["model"], "d_model": 48},
           ("generalist_steps" if stage == "generalist" else "specialist_steps"): 100000}
    (root / "sma_project.json").write_text(json.dumps(new))
    building = lambda: [r for d in ((root / "outputs").glob(".general.build") if stage == "generalist" else (root / "outputs").glob(".shiftable.*.tmp"))
                        for r in _lines(d)]
    rc, out, err = _interrupt([sys.executable, "-c", RETRAIN, root], root, lambda r: any(x["step"] >= 20 for x in building()))
    assert rc != 0 and "retrained" not in out, (rc, out, err)
    after = _snapshot(root)
    if stage == "generalist": assert after == before
    else:  # the new generalist may be in, but the model that is used (shiftable) is the old one, whole
        assert {k: v for k, v in after.items() if "shiftable" in k} == {k: v for k, v in before.items() if "shiftable" in k}
    m = SpecialistManager(root, progress=False, log=None)
    model, tok = m.model()
    assert tok.vocab_size == model.cfg.vocab_size and model.cfg.d_model == 32 and m.list_specialists() == ["math"]
    assert m.generate("the cat", max_new_tokens=6, seed=0, temperature=0)["completion"] == ref["completion"]


READER = """
import json, sys, time
from pathlib import Path
from sma_kit.manager import SpecialistManager
root = Path(sys.argv[1]); r = SpecialistManager(root, progress=False, log=None)
errors, reads = [], 0
def read():
    st = r.get_status(); model, tok = r.model()
    assert st["initialized"] and "math" in st["specialists"] and "math" in model.specialists, (st, model.specialists)
    assert tok.vocab_size == model.cfg.vocab_size
read()                             # the first read pays for importing torch: the swaps start once the reader polls
print("reading", flush=True)
while not (root / "stop").exists():
    try:
        read(); reads += 1
    except Exception as e: errors.append(repr(e)[:300])
print(json.dumps({"reads": reads, "errors": errors}))
"""


def test_readers_never_fail_during_swaps(tmp_path):
    "Reader processes poll get_status() and model() while 20 swaps (10 deletes, 10 adds) replace the model."
    from sma_kit.manager import SpecialistManager
    root = _initialised(tmp_path, ("general", "math", "law"), SETTINGS)
    law = (root / "data" / "law" / "a.txt").read_text()
    writer = SpecialistManager(root, progress=False, log=None)
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(root)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in readers: assert p.stdout.readline().strip() == "reading"
        for i in range(10):
            writer.delete_specialist("law")
            (root / "data" / "law").mkdir(); (root / "data" / "law" / "a.txt").write_text(law)
            writer.add_specialist("law", steps=2)
    finally:
        (root / "stop").write_text("")
        outs = [json.loads(p.communicate(timeout=120)[0]) for p in readers]
    assert not [e for o in outs for e in o["errors"]], [o["errors"][:3] for o in outs]
    assert all(o["reads"] > 20 for o in outs), [o["reads"] for o in outs]
    assert writer.list_specialists() == ["math", "law"], writer.list_specialists()


def test_cli_trained_project_of_another_shape(tmp_path):
    "A generalist and shiftable model trained with the CLI (seq_len 64, lora branches on the FFN), no sma_project.json."
    root = make_project(tmp_path / "p", ("general", "math"), SETTINGS)
    (root / "sma_project.json").unlink()
    out = root / "outputs"
    p = run_cli("sma_train_generalist", "--data_dir", root / "data", "--output_dir", out / "general", "--tokenizer", "byte",
                "--seq_len", 64, "--d_model", 32, "--n_heads", 2, "--n_layers", 2, "--dim_feedforward", 64, "--batch_size", 4,
                "--max_steps", 6, "--eval_every", 3, "--warmup_steps", 2, "--device", "cpu", "--quiet")
    assert p.returncode == 0, p.stderr
    p = run_cli("sma_train_specialists", "--generalist_ckpt", out / "general", "--data_dir", root / "data", "--output_dir", out / "shiftable",
                "--expert_site", "ffn", "--branch", "lora", "--lora_rank", 4, "--routing", "topk", "--batch_size", 4, "--max_steps", 6,
                "--eval_every", 3, "--warmup_steps", 2, "--device", "cpu", "--quiet")
    assert p.returncode == 0, p.stderr
    (root / "data" / "law").mkdir(); (root / "data" / "law" / "l.txt").write_text(WORDS["law"] * 200)
    p = run_cli("sma_add_specialist", "--project_dir", root, "--name", "law", "--steps", 4, "--quiet")
    assert p.returncode == 0 and "added law" in p.stdout, p.stderr
    sc = json.loads((out / "shiftable/specialists.json").read_text())
    assert sc["specialists"] == ["math", "law"] and (sc["expert_site"], sc["branch"], sc["lora_rank"], sc["routing"]) == ("ffn", "lora", 4, "topk")
    assert json.loads((out / "shiftable/config.json").read_text())["max_seq_len"] == 64
    p = run_cli("sma_delete_specialist", "--project_dir", root, "--name", "math")
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "shiftable/specialists.json").read_text())["specialists"] == ["law"]
    from sma_kit.manager import SpecialistManager
    assert SpecialistManager(root, progress=False, log=None).generate("the court", max_new_tokens=4, seed=0)["n_tokens"] >= 1
    assert not (root / "sma_project.json").exists()   # the manager reads the project, it does not write settings into it
