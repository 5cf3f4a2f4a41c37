"`sma_train_generalist --init_from DIR` on both backends, through the console script."
import json
import pytest
from conftest import run_cli, sha, TINY, one_error_line


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    "A tiny torch generalist (byte tokenizer) on a DATA root with a math folder."
    from conftest import PIGS
    root = tmp_path_factory.mktemp("init") / "data"
    (root / "general").mkdir(parents=True); (root / "general" / "pigs.txt").write_text(PIGS)
    (root / "math").mkdir(); (root / "math" / "q.txt").write_text("".join(f"{i} + {i} = {2 * i}\n" for i in range(300)))
    out = root.parent / "gen"
    p = run_cli("sma_train_generalist", "--data_dir", root, "--output_dir", out, "--tokenizer", "byte", *TINY)
    assert p.returncode == 0, p.stderr
    return root, out


def tree(d):
    return {str(p.relative_to(d)): sha(p) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_init_from_is_a_new_run_and_leaves_dir_untouched(base, tmp_path, backend):
    root, gen = base
    before = tree(gen)
    out = tmp_path / "ft"
    p = run_cli("sma_train_generalist", "--data_dir", root / "math", "--output_dir", out, "--init_from", gen, "--backend", backend,
                "--device", "cpu", "--seq_len", 32, "--batch_size", 4, "--max_steps", 4, "--eval_every", 2, "--log_every", 1, "--quiet",
                *(["--mesh", "1,1"] if backend == "jax" else []))
    assert p.returncode == 0, p.stderr
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]                   # step 0 onwards: a new schedule, not a resume
    assert json.loads((out / "config.json").read_text()) == json.loads((gen / "config.json").read_text())
    assert sha(out / "tokenizer.json") == sha(gen / "tokenizer.json")   # the corpus went through DIR's tokenizer
    assert tree(gen) == before


def test_init_from_refuses_contradictions(base, tmp_path):
    root, gen = base
    args = ["--data_dir", root / "math", "--init_from", gen, "--seq_len", 32, "--max_steps", 2, "--quiet"]
    one_error_line(run_cli("sma_train_generalist", "--output_dir", tmp_path / "a", *args, "--d_model", 64), "--d_model 64 contradicts", "config.json")
    one_error_line(run_cli("sma_train_generalist", "--output_dir", gen, "--overwrite", *args), "is the --init_from dir")
    one_error_line(run_cli("sma_train_generalist", "--output_dir", tmp_path / "b", *args[:-5], "--seq_len", 64, "--max_steps", 2), "--seq_len 64", "max_seq_len 32")
    one_error_line(run_cli("sma_train_generalist", "--output_dir", tmp_path / "c", "--data_dir", root, "--init_from", tmp_path / "nope"), "model dir not found")
    assert not any((tmp_path / n).exists() for n in "abc")
