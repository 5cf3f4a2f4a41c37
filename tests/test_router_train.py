"`sma_train_router` through its console script: a tiny run, and one line for each bad input."
import json
import pytest
import torch
from conftest import run_cli, one_error_line


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "Two tiny kit members sharing a byte tokenizer, and two small jsonl datasets."
    from sma_kit.config import ModelConfig
    from sma_kit.tokenizer import byte_tokenizer
    from sma_kit.torch.model import DecoderLM
    from sma_kit.torch.train import save_model
    d = tmp_path_factory.mktemp("router")
    tok = byte_tokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=48)
    for i, name in enumerate(("a", "b")):
        torch.manual_seed(i); save_model(DecoderLM(cfg), d / name, tok)
    (d / "q.jsonl").write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(20)))
    (d / "t.jsonl").write_text("".join(json.dumps({"text": f"line {i} of text"}) + "\n" for i in range(20)))
    (d / "empty.jsonl").write_text("")
    return d


def args(d, out, *extra):
    return ["--models", f"{d / 'a'},{d / 'b'}", "--datasets", f"{d / 'q.jsonl'},{d / 't.jsonl'}", "--output_dir", out,
            "--max_steps", 4, "--batch_size", 2, "--eval_every", 2, "--head_hidden_dim", 8, "--device", "cpu", "--quiet", *extra]


def test_cli_trains_and_saves_a_router(setup, tmp_path):
    p = run_cli("sma_train_router", *args(setup, tmp_path / "r"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("best validation loss ")
    info = json.loads((tmp_path / "r" / "router.json").read_text())
    assert info["model_type"] == "router" and info["head"]["head_hidden_dim"] == 8 and info["datasets"] == ["q", "t"]
    assert (tmp_path / "r" / "router.safetensors").is_file() and (tmp_path / "r" / "metrics.jsonl").is_file()
    assert info["train"]["features"] == "cache" and not (tmp_path / "r" / "features").exists()   # the cache goes when the run ends


def test_cli_live_features_and_a_kept_cache(setup, tmp_path):
    "--features live trains without a cache; --features_dir keeps one, and a second run with the same members and data reuses it."
    p = run_cli("sma_train_router", *args(setup, tmp_path / "live", "--features", "live"))
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "live" / "router.json").read_text())["train"]["features"] == "live" and not (tmp_path / "live" / "features").exists()
    for i in range(2):
        p = run_cli("sma_train_router", *args(setup, tmp_path / f"c{i}", "--features_dir", tmp_path / "feat", "--log_every_n_steps", 1))
        assert p.returncode == 0, p.stderr
    meta = json.loads((tmp_path / "feat" / "meta.json").read_text())
    assert meta["done"] == {s: len(meta["counts"][s]) for s in ("train", "val")} and meta["dtype"] == "float16"
    assert [json.loads(l)["train_loss"] for l in (tmp_path / "c0" / "metrics.jsonl").read_text().splitlines()] == \
           [json.loads(l)["train_loss"] for l in (tmp_path / "c1" / "metrics.jsonl").read_text().splitlines()]
    one_error_line(run_cli("sma_train_router", *args(setup, tmp_path / "x", "--features", "disk")), "--features must be cache or live")


def test_cli_bad_inputs_are_one_line(setup, tmp_path):
    d = setup
    one_error_line(run_cli("sma_train_router", *args(d, tmp_path / "x", "--objective", "best")), "--objective must be one of marginal, oracle, both")
    p = run_cli("sma_train_router", *[str(a).replace(str(d / "b"), str(d / "missing")) for a in args(d, tmp_path / "y")])
    one_error_line(p, "missing", "model dir not found")
    p = run_cli("sma_train_router", *[str(a).replace(str(d / "t.jsonl"), str(d / "empty.jsonl")) for a in args(d, tmp_path / "z")])
    one_error_line(p, "empty.jsonl", "empty dataset")
    one_error_line(run_cli("sma_train_router", "--models", d / "a"), "--datasets", "--output_dir")
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z"))


def test_cli_ctrl_c_saves_and_exits_130(setup, tmp_path):
    "A real SIGINT once the run logs its first step: the step finishes, the state is saved, one line, exit 130."
    import signal, subprocess, sys, time
    from conftest import _RUNNERS
    out = tmp_path / "r"
    run_cli("sma_train_router", "--help")   # writes the runner script
    a = [str(x) for x in args(setup, out)]
    a[a.index("--max_steps") + 1] = "100000"; a[a.index("--eval_every") + 1] = "50000"
    proc = subprocess.Popen([sys.executable, str(_RUNNERS / "sma_train_router"), *a, "--log_every_n_steps", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        give_up = time.monotonic() + 600   # a hang guard only: the sync is the log line
        while proc.poll() is None and time.monotonic() < give_up and not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().strip()):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None: proc.kill()
    assert proc.returncode == 130 and stdout.strip().splitlines()[-1].startswith("interrupted at step "), (proc.returncode, stdout, stderr[-2000:])
    state = json.loads((out / "train_state" / "state.json").read_text())
    assert state["state"]["step"] >= 1 and state["total_steps"] == 100000
    assert (out / "features" / "meta.json").is_file()   # kept for the resume
