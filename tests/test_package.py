"Package-level promises: importing the kit (and its backend-free modules) loads neither torch nor jax."
import subprocess, sys

BACKEND_FREE = ["sma_kit", "sma_kit.config", "sma_kit.data", "sma_kit.filters", "sma_kit.tokenizer", "sma_kit.corpus",
                "sma_kit.checkpoint", "sma_kit.eval", "sma_kit.code_eval", "sma_kit.generate", "sma_kit.qa_eval",
                "sma_kit.manager", "sma_kit.cli", "sma_kit.widgets", "sma_kit.jobs"]


def test_backend_free_imports():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in BACKEND_FREE) +
            "bad = sorted(m for m in ('torch', 'jax', 'flax', 'torch_xla') if m in sys.modules)\n"
            "print(','.join(bad))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", f"importing the kit loaded {p.stdout.strip()}"

