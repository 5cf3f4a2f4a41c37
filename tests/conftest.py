import atexit, os, shutil, subprocess, sys, hashlib, tempfile
from pathlib import Path
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

BIN = Path(sys.executable).parent
_RUNNERS = Path(tempfile.mkdtemp(prefix="sma_cli_"))
atexit.register(shutil.rmtree, _RUNNERS, True)


def console_scripts() -> dict[str, str]:
    "{script name: 'module:function'} from settings.ini, the checkout's own entry points."
    from configparser import ConfigParser
    cp = ConfigParser(); cp.read(Path(__file__).resolve().parents[1] / "settings.ini")
    return dict(l.strip().split("=", 1) for l in cp["DEFAULT"]["console_scripts"].splitlines() if l.strip())


def run_cli(name, *args, timeout=600, env=None):
    "Run a console script of the kit as settings.ini declares it (an installed entry point may be stale); returns CompletedProcess with text stdout/stderr."
    mod, fn = console_scripts()[name].split(":")
    script = _RUNNERS / name      # a file, as an entry point is: call_parse parses argv only when called from a script's top level
    if not script.exists(): script.write_text(f"import sys\nfrom {mod} import {fn}\nsys.exit({fn}())\n")
    cmd = [sys.executable, str(script)]
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=e)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def data_dir():
    "SMA_DATA_DIR (the shared real corpora), or skip."
    d = os.environ.get("SMA_DATA_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("SMA_DATA_DIR is not set to the real-data folder")
    return Path(d)


PIGS = "".join(f"{i} little pigs went to market and {i % 7} came home to eat {i % 5} apples.\n" for i in range(300))


@pytest.fixture
def tiny_corpus(tmp_path):
    "A DATA root with general/ and one specialist folder."
    root = tmp_path / "data"
    (root / "general").mkdir(parents=True)
    (root / "general" / "pigs.txt").write_text(PIGS)
    (root / "general" / "more.md").write_text(PIGS.upper())
    (root / "math").mkdir()
    (root / "math" / "sums.jsonl").write_text("".join(f'{{"question": "What is {i} + {i}?", "answer": "#### {2 * i}"}}\n' for i in range(200)))
    return root


TINY = ["--seq_len", 32, "--d_model", 32, "--n_heads", 2, "--n_layers", 1, "--dim_feedforward", 64,
        "--batch_size", 4, "--max_steps", 6, "--eval_every", 3, "--warmup_steps", 2, "--quiet"]


def one_error_line(p, *needles):
    "A user mistake: exit status 2, exactly one `error: ...` line on stderr (progress bars aside), no traceback."
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith(("train:", "\r"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    for n in needles: assert str(n) in lines[0], (n, lines[0])
