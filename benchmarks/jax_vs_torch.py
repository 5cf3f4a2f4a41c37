"""The JAX trainer against the PyTorch one on this CPU, the cost of a simulated 8-device mesh, and nanoGPT's
CPU "baby GPT" recipe trained with the JAX trainer.

1. Train-step throughput, same model and batch (the baby shape: byte vocabulary, seq 64, batch 12, 4 layers,
   4 heads, d_model 128, SwiGLU 341), each trainer's own step (sampler batch, forward, backward, clipping,
   AdamW), measured in one process in alternating blocks so both see the same background load:
   a. default threads, wall clock (what a user gets);
   b. one thread each (torch.set_num_threads(1), XLA single-threaded), CPU time: the arithmetic
      efficiency of the two backends, insensitive to other processes on the machine (run in a subprocess,
      because XLA's threading is fixed when jax is imported); the same for the shiftable model with two
      specialists (copy branches at the attention, soft routing, the shiftable loss, only branches and
      gates trained), each backend's own trainer step.
2. The same JAX step (batch 16) on 1 device and on a (2, 4) mesh of 8 simulated CPU devices
   (XLA_FLAGS=--xla_force_host_platform_device_count=8, in a subprocess), interleaved.
3. The baby recipe with `sma_kit.jax.train.train_generalist`: tinyshakespeare, 2000 steps, lr 1e-3 -> 1e-4,
   warmup 100, weight decay 0.1, beta2 0.99, clip 1.0, dropout 0; the kit's validation loss (last 10%).

    SMA_DATA_DIR=../shared/data python benchmarks/jax_vs_torch.py [--steps 2000] [--rounds 10] [--block 10]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
SEQ, BATCH = 64, 12
SHAPE = dict(d_model=128, n_layers=4, n_heads=4, ffn_dim=341, dropout=0.0, max_seq_len=SEQ)


def setup(batch=BATCH):
    "(cfg, tc, train stream) of the baby recipe; random tokens for the timing runs."
    import numpy as np
    from sma_kit.config import ModelConfig, TrainConfig
    cfg = ModelConfig(vocab_size=258, **SHAPE)
    tc = TrainConfig(batch_size=batch, seq_len=SEQ, max_steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.1,
                     beta2=0.99, grad_clip=1.0, seed=1337)
    return cfg, tc, np.random.default_rng(0).integers(0, 258, 400_000).astype(np.int32)


def jax_stepper(cfg, tc, stream, mesh_shape="1,1", devices=None):
    "A function running n JAX trainer steps (fresh batches from the sampler each step)."
    import jax
    from sma_kit.data import MixtureSampler
    from sma_kit.jax.mesh import make_mesh, sharded_model
    from sma_kit.jax.train import Trainer
    mesh = make_mesh(mesh_shape, devices or jax.devices())
    t = Trainer(sharded_model(cfg, mesh, 0), None, MixtureSampler({"g": stream}, SEQ, seed=1), {}, tc, tempfile.mkdtemp(), mesh, progress=False)
    return trainer_runner(t)


def trainer_runner(t):
    "A function running n steps of the JAX trainer (`Trainer.train_step`, what `Trainer.fit` runs)."
    t._begin()
    def run(n):
        t._zero_loss()
        for _ in range(n): t.train_step()
        return float(t._losses[-1])
    return run


def torch_stepper(cfg, tc, stream):
    "A function running n steps of the PyTorch trainer (`Trainer.train_step`, what `Trainer.fit` runs)."
    import torch
    from sma_kit.data import MixtureSampler
    from sma_kit.torch.model import DecoderLM
    from sma_kit.torch.train import Trainer as TorchTrainer
    torch.manual_seed(0)
    t = TorchTrainer(DecoderLM(cfg), None, MixtureSampler({"g": stream}, SEQ, seed=1), {}, tc, tempfile.mkdtemp(), "cpu", progress=False)
    t._begin()
    def run(n):
        t._zero_loss()
        for _ in range(n): t.train_step()
        return float(t._loss_sum)
    return run


SPECIALISTS = ["math", "code"]


def shift_steppers(cfg, tc, stream):
    "JAX and PyTorch runners of n shiftable trainer steps: 2 copy specialists at the attention, soft routing, shift_loss, only branches + gates trained."
    import jax, torch
    from functools import partial
    from sma_kit.config import expert_ids
    from sma_kit.data import MixtureSampler
    from sma_kit.torch.model import DecoderLM as TorchLM
    from sma_kit.torch.shift import ShiftableLM as TorchShift, shift_loss, expert_targets
    from sma_kit.torch.train import Trainer as TorchTrainer
    from sma_kit.jax.model import load_state_dict
    from sma_kit.jax.shift import ShiftableLM, shift_loss_fn
    from sma_kit.jax.mesh import make_mesh
    from sma_kit.jax.train import Trainer
    doms = ["general", *SPECIALISTS]
    sampler = lambda: MixtureSampler({d: stream[i * 100_000:(i + 1) * 100_000] for i, d in enumerate(doms)}, SEQ, seed=1)
    torch.manual_seed(0)
    tm = TorchShift.from_base_model(TorchLM(cfg), SPECIALISTS).train()
    jm = load_state_dict(ShiftableLM(cfg, tm.sc, 0), {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    tt = TorchTrainer(tm, None, sampler(), {}, tc, tempfile.mkdtemp(), "cpu", loss_fn=partial(shift_loss, targets=expert_targets(doms, tm.experts)), progress=False)
    jt = Trainer(jm, None, sampler(), {}, tc, tempfile.mkdtemp(), make_mesh("1,1", jax.devices()[:1]), progress=False,
                 loss_fn=shift_loss_fn(expert_ids(doms, jm.experts)), wrt=jm.trainable())
    run_jax = trainer_runner(jt)
    tt._params = [p for g in tt.opt.param_groups for p in g["params"]]   # what fit() sets up before its first step
    def run_torch(n):
        tt._zero_loss()
        for _ in range(n): tt.train_step()
        return float(tt._loss_sum)
    return run_jax, run_torch


def interleave(runners: dict, rounds: int, block: int, clock=time.perf_counter, pause=0.2):
    "Seconds per block for each runner, alternating blocks (and which one goes first) round by round."
    for r in runners.values(): r(3)                         # compile / warm up
    out = {k: [] for k in runners}
    names = list(runners)
    for i in range(rounds):
        for k in (names if i % 2 == 0 else names[::-1]):
            time.sleep(pause)                               # let the other library's worker threads go idle
            t = clock(); runners[k](block); out[k].append(clock() - t)
    return out


def summarise(times: dict, tokens_per_step: int, block: int, a: str, b: str) -> dict:
    tps = {k: [block * tokens_per_step / t for t in v] for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in tps.items()}
    per_round = [x / y for x, y in zip(tps[a], tps[b])]
    return {"tokens_per_s_median": med, f"ratio_{a}_over_{b}": med[a] / med[b],
            "ratio_per_round_median": statistics.median(per_round), "ratio_per_round_min_max": [min(per_round), max(per_round)],
            "ms_per_step_median": {k: 1e3 * statistics.median(v) / block for k, v in times.items()},
            "seconds_per_block": times}


def matmul_floor(rounds, reps=200):
    "One thread each, CPU time: the FFN's up-projection of a batch ([768, 128] x [128, 682], float32) alone, jitted XLA vs torch."
    import jax, jax.numpy as jnp, numpy as np, torch
    a, b = np.random.default_rng(0).standard_normal((BATCH * SEQ, 128), np.float32), np.random.default_rng(1).standard_normal((128, 682), np.float32)
    ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
    f = jax.jit(jnp.dot)
    def run_jax(n):
        for _ in range(n): r = f(ja, jb)
        r.block_until_ready()
    def run_torch(n):
        for _ in range(n): torch.mm(ta, tb)
    times = interleave({"jax": run_jax, "torch": run_torch}, rounds, reps, time.process_time, 0.0)
    ms = {k: 1e3 * statistics.median(v) / reps for k, v in times.items()}
    return {"ms_per_matmul_median": ms, "ratio_jax_over_torch_speed": ms["torch"] / ms["jax"]}


def measure_single_thread(rounds, block):
    "Child process: one thread each, CPU time."
    import torch
    torch.set_num_threads(1)
    cfg, tc, stream = setup()
    times = interleave({"jax": jax_stepper(cfg, tc, stream), "torch": torch_stepper(cfg, tc, stream)}, rounds, block, time.process_time, 0.0)
    out = summarise(times, BATCH * SEQ, block, "jax", "torch")
    run_jax, run_torch = shift_steppers(cfg, tc, stream)
    out["matmul_floor"] = matmul_floor(rounds)
    out["shiftable"] = summarise(interleave({"jax": run_jax, "torch": run_torch}, rounds, block, time.process_time, 0.0), BATCH * SEQ, block, "jax", "torch")
    print(json.dumps(out))


def measure_devices(rounds, block):
    "Child process with 8 simulated devices: the same step on 1 device and on a (2, 4) mesh."
    import jax
    cfg, tc, stream = setup(batch=16)
    cpu = jax.devices("cpu")
    assert len(cpu) == 8, cpu
    times = interleave({"mesh_2x4": jax_stepper(cfg, tc, stream, "2,4", cpu), "one_device": jax_stepper(cfg, tc, stream, "1,1", cpu)}, rounds, block)
    s = summarise(times, 16 * SEQ, block, "mesh_2x4", "one_device")
    s["step_time_overhead_8_devices"] = s["ms_per_step_median"]["mesh_2x4"] / s["ms_per_step_median"]["one_device"]
    print(json.dumps(s))


def child(flag, env_extra, rounds, block):
    env = {**os.environ, **env_extra}
    p = subprocess.run([sys.executable, __file__, flag, "--rounds", str(rounds), "--block", str(block)], env=env, capture_output=True, text=True)
    if p.returncode: sys.exit(f"{flag} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--skip_recipe", action="store_true")
    ap.add_argument("--default_only", action="store_true", help="only the default-threads step ratio (results/jax_vs_torch_default.json)")
    ap.add_argument("--single_thread_child", action="store_true")
    ap.add_argument("--devices_child", action="store_true")
    args = ap.parse_args()
    if args.single_thread_child: return measure_single_thread(args.rounds, args.block)
    if args.devices_child: return measure_devices(args.rounds, args.block)

    from common import machine, data_dir, write
    import jax, flax, optax, orbax.checkpoint
    load_before = os.getloadavg()
    cfg, tc, stream = setup()
    t0 = time.time()
    default = summarise(interleave({"jax": jax_stepper(cfg, tc, stream), "torch": torch_stepper(cfg, tc, stream)}, args.rounds, args.block),
                        BATCH * SEQ, args.block, "jax", "torch")
    print(f"default threads, wall clock: JAX/PyTorch tokens/s = {default['ratio_jax_over_torch']:.2f} "
          f"({default['tokens_per_s_median']['jax']:.0f} vs {default['tokens_per_s_median']['torch']:.0f})", flush=True)
    if args.default_only:
        import subprocess as sp
        commit = sp.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
        return write("jax_vs_torch_default", {"train_step_default_threads_wall_clock": default, "target_ratio": 0.9, "commit": commit,
                                              "shape": {"vocab_size": 258, **SHAPE, "batch_size": BATCH, "seq_len": SEQ},
                                              "timing": {"rounds": args.rounds, "block_steps": args.block},
                                              "load_average_before_after": [load_before, os.getloadavg()],
                                              "machine": {**machine(), "jax": jax.__version__, "flax": flax.__version__}})
    single = child("--single_thread_child", {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
                                             "OMP_NUM_THREADS": "1"}, args.rounds, args.block)
    print(f"one thread each, CPU time: JAX/PyTorch tokens/s = {single['ratio_jax_over_torch']:.2f} "
          f"({single['ms_per_step_median']['jax']:.1f} vs {single['ms_per_step_median']['torch']:.1f} ms/step)", flush=True)
    mm = single["matmul_floor"]
    print(f"one [768,128]x[128,682] matmul, one thread each: XLA {mm['ms_per_matmul_median']['jax']:.3f} ms vs torch "
          f"{mm['ms_per_matmul_median']['torch']:.3f} ms ({mm['ratio_jax_over_torch_speed']:.2f}x torch's speed)", flush=True)
    sh = single["shiftable"]
    print(f"shiftable model (2 specialists), one thread each, CPU time: JAX/PyTorch tokens/s = {sh['ratio_jax_over_torch']:.2f} "
          f"({sh['ms_per_step_median']['jax']:.1f} vs {sh['ms_per_step_median']['torch']:.1f} ms/step)", flush=True)
    devices = child("--devices_child", {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, max(4, args.rounds // 2), args.block)
    print(f"8 simulated devices (2x4 mesh) vs 1: step time x{devices['step_time_overhead_8_devices']:.2f}", flush=True)
    timing_s = time.time() - t0

    recipe = None
    if not args.skip_recipe:
        from sma_kit.config import TrainConfig
        from sma_kit.jax.train import train_generalist
        src = data_dir() / "general" / "tinyshakespeare"
        out = Path(tempfile.mkdtemp(prefix="baby_jax_"))
        rtc = TrainConfig(batch_size=BATCH, seq_len=SEQ, max_steps=args.steps, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.1,
                          beta2=0.99, grad_clip=1.0, eval_every=250, log_every=50, seed=1337)
        t1 = time.time()
        res = train_generalist(src, out / "jax", SHAPE, rtc, tokenizer="byte", device="cpu", mesh="1,1", overwrite=True, progress=False)
        wall = time.time() - t1
        recs = [json.loads(l) for l in (out / "jax" / "metrics.jsonl").read_text().splitlines()]
        recipe = {"params": res["n_params"], "best_val_loss": res["best_val_loss"], "best_step": res["best_step"],
                  "final_val_loss": res["last_val"].get("val_loss"), "target_val_loss": 1.80, "nanoGPT_reported_val_loss": 1.898,
                  "meets_target": res["best_val_loss"] <= 1.80, "wall_s": wall, "train_tokens": res["train_tokens"], "val_tokens": res["val_tokens"],
                  "mean_train_tokens_per_s": statistics.mean(r["tokens_per_s"] for r in recs),
                  "val_curve": [{"step": r["step"], "val_loss": r["val_loss"]} for r in recs if "val_loss" in r]}
        print(f"baby recipe (JAX): best val loss {res['best_val_loss']:.4f} at step {res['best_step']} in {wall:.0f} s", flush=True)

    result = {
        "what": "JAX (flax.nnx + optax) vs PyTorch trainer steps on this CPU; 8 simulated devices; nanoGPT baby recipe with the JAX trainer",
        "shape": {"vocab_size": 258, **SHAPE, "batch_size": BATCH, "seq_len": SEQ},
        "train_step_default_threads_wall_clock": default,
        "train_step_one_thread_cpu_time": single,
        "eight_simulated_devices_vs_one": devices,
        "baby_recipe_jax": recipe,
        "target_ratio": 0.9,
        "timing": {"rounds": args.rounds, "block_steps": args.block, "seconds": timing_s},
        "load_average_before_after": [load_before, os.getloadavg()],
        "machine": {**machine(), "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                    "orbax_checkpoint": orbax.checkpoint.__version__, "jax_devices": [str(d) for d in jax.devices()]},
        "command": "SMA_DATA_DIR=../shared/data python benchmarks/jax_vs_torch.py " + " ".join(sys.argv[1:]),
    }
    write("jax_vs_torch", result)


if __name__ == "__main__":
    main()
