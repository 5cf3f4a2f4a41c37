"""PyTorch/XLA on the CPU PJRT device against eager CPU PyTorch, same model, same batches.

For each config: the first XLA step (trace + compile + run) and how much of it was compilation, the steady-state step
time of both backends and their ratio, evaluation time, and how many graphs XLA compiled over the run (target: one
train graph and one eval graph). Run it in the xla venv:

    VENV=$(bash .ci/xla_venv.sh | tail -1)
    PJRT_DEVICE=CPU "$VENV/bin/python" benchmarks/xla_bench.py            # -> benchmarks/results/xla.json
    PJRT_DEVICE=CPU "$VENV/bin/python" benchmarks/xla_bench.py --steps 20 --configs tiny --out xla_quick

Random tokens stand in for a corpus: step times do not depend on the text.
"""
import argparse, copy, json, os, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("PJRT_DEVICE", "CPU")
sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sma_kit.config import TrainConfig, SmaError, preset  # noqa: E402
from sma_kit.data import MixtureSampler  # noqa: E402
from sma_kit.torch.model import DecoderLM  # noqa: E402
from sma_kit.torch.train import Trainer  # noqa: E402

try:
    from sma_kit.torch import xla as X
    X.xla_device()   # start the runtime before any backward pass (autograd sizes its device queues on the first one)
except SmaError as e:
    sys.exit(f"xla_bench: {e}")
import torch_xla  # noqa: E402
import torch_xla.debug.metrics as met  # noqa: E402

CONFIGS = {  # model preset, batch size, window length
    "tiny": ("tiny", 8, 64),
    "seed000": ("seed000", 8, 128),
}
WARMUP = 2   # steps left out of the steady-state mean, for both backends


def compile_seconds() -> float:
    d = met.metric_data("CompileTime")
    return 0.0 if d is None else d[1] / 1e9   # the accumulator is in nanoseconds


def data(vocab: int, seq: int):
    rng = np.random.default_rng(0)
    stream = rng.integers(0, vocab, 200_000).astype(np.int64)
    return stream[:180_000], stream[180_000:180_000 + 16 * seq + 1]   # 16 validation windows


def eager(model, tc, train, val, out) -> dict:
    "The eager trainer on the CPU; per-step times from its metrics.jsonl (logged every step, eager is synchronous)."
    tr = Trainer(model, None, MixtureSampler({"general": train}, tc.seq_len, seed=0), {"general": val}, tc, out, "cpu", progress=False)
    t0 = time.perf_counter(); res = tr.fit(); wall = time.perf_counter() - t0
    recs = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    el = [r["elapsed_s"] for r in recs]
    t = time.perf_counter(); tr.evaluate(); eval_s = time.perf_counter() - t
    return {"first_step_s": el[0], "step_s": (el[-1] - el[WARMUP]) / (len(el) - 1 - WARMUP), "eval_s": eval_s,
            "wall_s": wall, "final_train_loss": recs[-1]["train_loss"], "val_loss": res["best_val_loss"]}


def xla(model, tc, train, val, out) -> dict:
    "The XLA trainer's step driven directly: nothing read back until the end of each timed stretch."
    n0, c0 = X.compile_count(), compile_seconds()
    tr = X.XlaTrainer(model, None, MixtureSampler({"general": train}, tc.seq_len, seed=0), {"general": val}, tc, out, "xla", progress=False)
    t = time.perf_counter(); tr.train_step(); first_loss = float(tr._loss_sum); first = time.perf_counter() - t
    first_compile = compile_seconds() - c0
    for _ in range(WARMUP - 1): tr.train_step()
    float(tr._loss_sum)
    t = time.perf_counter()
    for _ in range(tc.max_steps - WARMUP): tr.train_step()
    last = float(tr._loss_sum)                                  # waits for the last step
    step_s = (time.perf_counter() - t) / (tc.max_steps - WARMUP)
    c1 = compile_seconds()
    t = time.perf_counter(); ev = tr.evaluate(); eval_s = time.perf_counter() - t
    return {"first_step_s": first, "first_step_compile_s": first_compile, "step_s": step_s, "eval_s": eval_s,
            "eval_compile_s": compile_seconds() - c1, "graphs_compiled": X.compile_count() - n0,
            "compiles": tr.compiles, "steady_state_recompiles": tr.steady_state_recompiles(),
            "first_train_loss": first_loss, "val_loss": ev["val_loss"], "steps": tr.st["step"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", default="xla", help="results/<out>.json")
    a = ap.parse_args()
    res = {"machine": {**machine(), "torch_xla": torch_xla.__version__, "pjrt_device": os.environ.get("PJRT_DEVICE"),
                       "xla_devices": len(torch_xla.devices()), "load_avg_at_start": os.getloadavg()},
           "steps": a.steps, "warmup_steps_excluded": WARMUP, "configs": {}}
    for name in a.configs.split(","):
        pname, bs, seq = CONFIGS[name]
        torch.manual_seed(0)
        base = DecoderLM(preset(pname, max_seq_len=max(seq, preset(pname).max_seq_len)))
        tc = TrainConfig(batch_size=bs, seq_len=seq, max_steps=a.steps, log_every=1, eval_every=a.steps, warmup_steps=5, seed=0)
        train, val = data(base.cfg.vocab_size, seq)
        with tempfile.TemporaryDirectory() as d:
            e = eager(copy.deepcopy(base), tc, train, val, f"{d}/eager")
            x = xla(copy.deepcopy(base), tc, train, val, f"{d}/xla")
        r = {"preset": pname, "batch_size": bs, "seq_len": seq, "params": base.num_params(), "eager_cpu": e, "xla_cpu": x,
             "xla_over_eager_step_time": x["step_s"] / e["step_s"], "val_loss_diff": abs(x["val_loss"] - e["val_loss"])}
        res["configs"][name] = r
        print(f"{name}: eager {e['step_s'] * 1e3:.1f} ms/step, xla {x['step_s'] * 1e3:.1f} ms/step (x{r['xla_over_eager_step_time']:.2f}), "
              f"first xla step {x['first_step_s']:.1f} s ({x['first_step_compile_s']:.1f} s compiling), "
              f"graphs {x['graphs_compiled']} {x['compiles']}, val diff {r['val_loss_diff']:.2e}", flush=True)
    res["machine"]["load_avg_at_end"] = os.getloadavg()   # the cores are shared: read the times against this
    write(a.out, res)


if __name__ == "__main__":
    main()
