"""The JAX attention of one block against PyTorch's `scaled_dot_product_attention`, forward + backward, one thread
each, CPU time (steady on a shared machine): where a JAX training step loses time, if anywhere, in attention.

Baby-GPT shape (batch 12, seq 64, d_model 128, 4 heads), causal, the fused q/k/v and output projections and RoPE
included. Three variants, interleaved: the kit's `sma_kit.jax.model.attend` (heads-major batched matmuls), the same
block through `jax.nn.dot_product_attention` (XLA implementation), and torch's SDPA. Also the compiled HLO's
operation counts of both JAX variants (fusions, copies, transposes).

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1 python benchmarks/jax_attention.py [--rounds 7] [--block 30]
"""
import argparse, collections, os, re, statistics, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write

B, T, D, H = 12, 64, 128, 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--block", type=int, default=30)
    a = ap.parse_args()
    if "--xla_cpu_multi_thread_eigen=false" not in os.environ.get("XLA_FLAGS", ""):
        sys.exit("error: set XLA_FLAGS=--xla_cpu_multi_thread_eigen=false (one XLA thread; CPU time of several threads counts their waiting)")
    import jax, jax.numpy as jnp, torch
    import torch.nn.functional as F
    from sma_kit.jax.model import attend, apply_rope, rope_tables
    torch.set_num_threads(1)
    hd, rng = D // H, np.random.default_rng(0)
    x, wqkv, wo = (jnp.asarray(a_, jnp.float32) for a_ in (rng.standard_normal((B, T, D)), rng.standard_normal((D, 3 * D)) * 0.02,
                                                         rng.standard_normal((D, D)) * 0.02))
    cos, sin = rope_tables(hd, T)

    def kit(x, wqkv, wo): return attend(x, wqkv, wo, H, H, cos, sin).sum()

    def library(x, wqkv, wo):
        q, k, v = jnp.split((x @ wqkv).reshape(B, T, 3 * H, hd), [H, 2 * H], axis=2)
        y = jax.nn.dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, is_causal=True, implementation="xla")
        return (y.reshape(B, T, D) @ wo).sum()

    grads = {k: jax.jit(jax.grad(f, argnums=(0, 1, 2))) for k, f in (("jax kit attend", kit), ("jax.nn.dot_product_attention", library))}
    g0, g1 = (g(x, wqkv, wo) for g in grads.values())
    agree = max(float(jnp.abs(p - q).max()) for p, q in zip(g0, g1))
    tx, tw, two = (torch.tensor(np.asarray(t), requires_grad=True) for t in (x, wqkv.T, wo.T))

    def torch_step():
        q, k, v = F.linear(tx, tw).view(B, T, 3 * H, hd).transpose(1, 2).split([H, H, H], 1)
        F.linear(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D), two).sum().backward()

    def jax_runner(g):
        def run(n):
            for _ in range(n): out = g(x, wqkv, wo)
            jax.block_until_ready(out)
        return run

    runners = {**{k: jax_runner(g) for k, g in grads.items()}, "torch sdpa": lambda n: [torch_step() for _ in range(n)]}
    load = [os.getloadavg()]
    for r in runners.values(): r(3)
    ms = {k: [] for k in runners}
    for _ in range(a.rounds):
        for k, r in runners.items():
            t = time.process_time(); r(a.block); ms[k].append(1e3 * (time.process_time() - t) / a.block)
    load.append(os.getloadavg())
    med = {k: statistics.median(v) for k, v in ms.items()}
    ops = {k: dict(collections.Counter(re.findall(r"=\s*\S+\s+(\w[\w-]*)\(", g.lower(x, wqkv, wo).compile().as_text())).most_common(10))
           for k, g in grads.items()}
    for k, v in med.items(): print(f"{k:30s} {v:7.3f} ms forward + backward (CPU time)")
    write("jax_attention", {"what": "one block's causal attention (q/k/v + RoPE + attention + output), forward + backward, one thread, CPU time, interleaved",
                            "shape": {"batch": B, "seq": T, "d_model": D, "heads": H}, "ms_median": med,
                            "speed_vs_torch_sdpa": {k: med["torch sdpa"] / v for k, v in med.items()}, "max_grad_difference_jax_variants": agree,
                            "hlo_op_counts": ops, "ms_all": ms, "load_average_before_after": load, "machine": {**machine(), "jax": jax.__version__},
                            "command": "XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1 python benchmarks/jax_attention.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    try: main()
    except KeyboardInterrupt: print("interrupted", file=sys.stderr); sys.exit(130)
