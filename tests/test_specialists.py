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
