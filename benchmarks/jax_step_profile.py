"""Where a JAX training step goes, against PyTorch's: one thread each, CPU time, interleaved (run with
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1), baby-GPT shape of `jax_vs_torch.py`.

Pieces: the trainer's step (`Trainer.train_step`, what `fit` runs: sampler batch, placement, the compiled step),
the same update as a bare `jax.jit` of a pure function on fixed device batches (no host work at all), forward +
backward only, forward only; then the HLO operation counts and XLA's cost analysis of the trainer's compiled step.
Writes benchmarks/results/jax_step_profile.json.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1 python benchmarks/jax_step_profile.py [--only a,b] [--hlo_only]
"""
import argparse, collections, os, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np, jax, jax.numpy as jnp, optax
from flax import nnx
import jax_vs_torch as B
from common import machine, write
from sma_kit.data import MixtureSampler
from sma_kit.jax.mesh import make_mesh, sharded_model
from sma_kit.jax.train import Trainer, make_optimizer


def hlo_counts(compiled) -> dict:
    "Operation counts of a compiled step's HLO (every computation, fused ones included) and XLA's cost analysis."
    ops = collections.Counter(re.findall(r"=\s*\S+\s+(\w[\w-]*)\(", compiled.as_text()))
    ca = compiled.cost_analysis(); ca = ca[0] if isinstance(ca, list) else ca
    return {"ops": {k: ops.get(k, 0) for k in ("dot", "fusion", "copy", "transpose", "compare", "select", "reduce", "broadcast")},
            "top_ops": dict(ops.most_common(15)), "flops": ca.get("flops"), "bytes_accessed": ca.get("bytes accessed")}


def trainer(cfg, tc, stream):
    mesh = make_mesh("1,1", jax.devices()[:1])
    return Trainer(sharded_model(cfg, mesh, 0), None, MixtureSampler({"g": stream}, B.SEQ, seed=1), {}, tc, tempfile.mkdtemp(), mesh, progress=False)


def trainer_hlo(t) -> dict:
    t._begin()
    args = (t._state, *t._batch(), t._key, np.int32(0))
    return hlo_counts(t._step.lower(*args).compile())


def pure_pieces(cfg, tc):
    "Runners of the bare jitted update, forward + backward and forward on one fixed batch."
    m = sharded_model(cfg, make_mesh("1,1", jax.devices()[:1]), 0)
    gdef, params, rest = nnx.split(m, nnx.Param, ...)
    tx = make_optimizer(tc, tc.max_steps)
    rng = np.random.default_rng(0)
    x, y = (jnp.asarray(rng.integers(0, cfg.vocab_size, (B.BATCH, B.SEQ)), jnp.int32) for _ in range(2))
    def loss(p, x, y): return nnx.merge(gdef, p, rest)(x, y)[1]
    def step(p, o, x, y):
        l, g = jax.value_and_grad(loss)(p, x, y)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, l
    pstep, fwd, vg = jax.jit(step, donate_argnums=(0, 1)), jax.jit(loss), jax.jit(jax.value_and_grad(loss))
    state = [jax.tree.map(jnp.copy, params), tx.init(params)]   # the step donates its inputs
    def run_pure(n):
        for _ in range(n): state[0], state[1], l = pstep(state[0], state[1], x, y)
        return float(l)
    def run_fwd(n):
        for _ in range(n): l = fwd(params, x, y)
        return float(l)
    def run_vg(n):
        for _ in range(n): l, g = vg(params, x, y)
        return float(l)
    return {"jax_pure_jit": run_pure, "jax_fwd": run_fwd, "jax_fwd_bwd": run_vg}, (x, y)


def torch_pieces(cfg, x, y):
    import torch
    from sma_kit.torch.model import DecoderLM
    torch.manual_seed(0); tmod = DecoderLM(cfg)
    tx_, ty_ = torch.from_numpy(np.asarray(x)).long(), torch.from_numpy(np.asarray(y)).long()
    def t_fwd(n):
        with torch.no_grad():
            for _ in range(n): tmod(tx_, ty_)
    def t_vg(n):
        for _ in range(n):
            out = tmod(tx_, ty_); l = out[1] if isinstance(out, tuple) else out
            l.backward()
            for p in tmod.parameters(): p.grad = None
    return {"torch_fwd": t_fwd, "torch_fwd_bwd": t_vg}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated runner names (default: all)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--hlo_only", action="store_true", help="print the trainer step's HLO counts and stop (nothing written)")
    args = ap.parse_args()
    cfg, tc, stream = B.setup()
    t = trainer(cfg, tc, stream)
    hlo = trainer_hlo(t)
    print("trainer step HLO:", hlo["ops"], "flops", hlo["flops"], flush=True)
    if args.hlo_only: return
    import torch
    torch.set_num_threads(1)
    load = [os.getloadavg()]
    pure, (x, y) = pure_pieces(cfg, tc)
    runners = {"jax_trainer": B.trainer_runner(t), **pure, "torch_trainer": B.torch_stepper(cfg, tc, stream), **torch_pieces(cfg, x, y)}
    only = args.only.split(",") if args.only else list(runners)
    times = B.interleave({k: runners[k] for k in only}, args.rounds, args.block, time.process_time, 0.0)
    load.append(os.getloadavg())
    ms = {k: 1e3 * statistics.median(v) / args.block for k, v in times.items()}
    for k, v in ms.items(): print(f"{k:16s} {v:7.2f} ms/step (CPU time)")
    res = {"what": f"JAX vs PyTorch training step pieces, one thread each, CPU time, interleaved ({args.rounds} blocks of {args.block} steps), "
                   "baby-GPT shape (benchmarks/jax_vs_torch.py)",
           "ms_per_step_median": ms, "seconds_per_block": times, "trainer_step_hlo": hlo,
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip(),
           "load_average_before_after": load, "machine": {**machine(), "jax": jax.__version__},
           "command": "XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1 python benchmarks/jax_step_profile.py " + " ".join(sys.argv[1:])}
    if "jax_trainer" in ms and "torch_trainer" in ms:
        res["ratio_jax_over_torch_speed"] = ms["torch_trainer"] / ms["jax_trainer"]
        print(f"JAX trainer step at {res['ratio_jax_over_torch_speed']:.2f}x PyTorch's speed")
    write("jax_step_profile", res)


if __name__ == "__main__":
    main()
