"""Where a JAX training step goes, against PyTorch's: one thread each, CPU time, interleaved (run with
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1), baby-GPT shape of `jax_vs_torch.py`.

Pieces: the trainer's step (`jax_vs_torch.jax_stepper` / `torch_stepper`), the same JAX update as a plain `jax.jit`
of a pure function (state split once, buffers donated: no nnx graph walk per call), forward + backward only, forward
only; then the compiled step's HLO operation counts and XLA's cost analysis.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1 python benchmarks/jax_step_profile.py [runner,runner,..]
"""
import sys, time, statistics, collections, re, os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np, jax, jax.numpy as jnp, torch
from flax import nnx
import jax_vs_torch as B
from common import write


cfg, tc, stream = B.setup()
run_jax = B.jax_stepper(cfg, tc, stream)
run_torch = B.torch_stepper(cfg, tc, stream)

# pieces in JAX: a pure jax.jit over pytrees (no nnx graph traversal per call), fwd only, fwd+bwd
from sma_kit.jax.mesh import make_mesh, sharded_model
from sma_kit.jax.train import make_optimizer
m = sharded_model(cfg, make_mesh("1,1", jax.devices()), 0)
gdef, params, rest = nnx.split(m, nnx.Param, ...)
tx = make_optimizer(tc, 2000)
ostate = tx.init(params)
rng = np.random.default_rng(0)
x = jnp.asarray(rng.integers(0, 258, (12, 64)), jnp.int32); y = jnp.asarray(rng.integers(0, 258, (12, 64)), jnp.int32)
def loss(p, x, y): return nnx.merge(gdef, p, rest)(x, y)[1]
fwd = jax.jit(loss)
vg = jax.jit(jax.value_and_grad(loss))
import optax
def step(p, o, x, y):
    l, g = jax.value_and_grad(loss)(p, x, y)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, l
pstep = jax.jit(step, donate_argnums=(0, 1))
state = [jax.tree.map(jnp.copy, params), ostate]   # the step donates its inputs
def run_pure(n):
    for _ in range(n): state[0], state[1], l = pstep(state[0], state[1], x, y)
    return float(l)
def run_fwd(n):
    for _ in range(n): l = fwd(params, x, y)
    return float(l)
def run_vg(n):
    for _ in range(n): l, g = vg(params, x, y)
    return float(l)
from sma_kit.torch.model import DecoderLM
torch.manual_seed(0); tmod = DecoderLM(cfg)
tx_, ty_ = torch.from_numpy(np.asarray(x)).long(), torch.from_numpy(np.asarray(y)).long()
def t_fwd(n):
    with torch.no_grad():
        for _ in range(n): l = tmod(tx_, ty_)
def t_vg(n):
    for _ in range(n):
        out = tmod(tx_, ty_); l = out[1] if isinstance(out, tuple) else out
        l.backward()
        for p in tmod.parameters(): p.grad = None
runners = {"jax_trainer": run_jax, "jax_pure_jit": run_pure, "jax_fwd": run_fwd, "jax_fwd_bwd": run_vg,
           "torch_trainer": run_torch, "torch_fwd": t_fwd, "torch_fwd_bwd": t_vg}
only = sys.argv[1].split(",") if len(sys.argv) > 1 else list(runners)
load = [os.getloadavg()]
torch.set_num_threads(1)
times = B.interleave({k: runners[k] for k in only}, 6, 10, time.process_time, 0.0)
print("load", __import__("os").getloadavg())
for k, v in times.items(): print(f"{k:16s} {1e3*statistics.median(v)/10:7.2f} ms/step")

# HLO of the pure step: op counts and cost
c = pstep.lower(params, ostate, x, y).compile()
txt = c.as_text()
ops = collections.Counter(re.findall(r"=\s*\S+\s+(\w[\w-]*)\(", txt))
print("fusions", ops.get("fusion"), "top ops", ops.most_common(15))
ca = c.cost_analysis(); ca = ca[0] if isinstance(ca, list) else ca
print("flops", ca.get("flops"), "bytes", ca.get("bytes accessed"))
write("jax_step_profile", {"what": "JAX vs PyTorch training step pieces, one thread each, CPU time, interleaved (6 blocks of 10 steps)",
                           "ms_per_step_median": {k: 1e3 * statistics.median(v) / 10 for k, v in times.items()}, "hlo_op_counts": dict(ops.most_common(20)),
                           "flops": ca.get("flops"), "bytes_accessed": ca.get("bytes accessed"), "load_average_before_after": [*load, os.getloadavg()]})
