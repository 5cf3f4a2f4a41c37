"""nanoGPT's CPU "baby GPT" recipe: the kit's training step beside nanoGPT's own, in one process.

Shape: byte tokens (the kit's byte tokenizer, the same vocabulary for both), seq_len 64, batch 12, 4 layers,
4 heads, d_model 128; nanoGPT's 4x GELU MLP against the kit's SwiGLU with hidden size 341 (3 x 128 x 341 ~=
2 x 128 x 512: equal parameter budget), dropout 0, no biases (nanoGPT's train.py default). A step is the
whole of it for both: forward, loss, backward, gradient clipping at 1.0, AdamW (weight decay on matrices only,
beta2 0.99). The kit's step is `Trainer.train_step`, the code `sma_train_generalist` runs; nanoGPT's is its
`GPT` from its own model.py with the optimizer its `configure_optimizers` builds.

nanoGPT is not part of the repository: point `--nanogpt` (or the env var NANOGPT_DIR) at a checkout holding
its model.py. The variants are timed in interleaved blocks (the machine is shared: each block runs every
variant once, in turn) and the medians are reported with the load average before and after.

    NANOGPT_DIR=path/to/nanoGPT SMA_DATA_DIR=path/to/data python benchmarks/baby_gpt.py [--blocks 7] [--block_steps 30]
        [--variants kit,kit_compile,kit_bf16] [--loss_steps 0] [--cpu_time]

`--cpu_time` times one torch thread by the process's CPU time, which barely depends on other processes on a shared
machine; without it the figure is wall time at torch's default threads. Blocks alternate their order.

`--loss_steps N` also trains both for N steps from the same seed with the recipe's schedule (lr 1e-3 -> 1e-4,
warmup 100) and records their validation losses (the kit's definition: every non-overlapping window of the
last 10%).
"""
import argparse, contextlib, importlib.util, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
from common import machine, data_dir, write

from sma_kit.config import ModelConfig, TrainConfig, SmaError, lr_at
from sma_kit.data import token_stream, split_stream, MixtureSampler, load_domain
from sma_kit.tokenizer import byte_tokenizer
from sma_kit.torch.model import DecoderLM
from sma_kit.torch.train import Trainer, eval_loss

SEQ, BATCH, D, L, H = 64, 12, 128, 4, 4


def load_nanogpt(path):
    "nanoGPT's model module, imported from its file (never copied into the repository)."
    f = Path(path or "") / "model.py"
    if not path or not f.is_file(): sys.exit("error: give nanoGPT's checkout with --nanogpt DIR or NANOGPT_DIR (it must hold model.py)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", f)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def context() -> dict:
    "Commit and load: what a number on a shared machine needs beside it."
    try: commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError: commit = ""
    return {"commit": commit, "loadavg": list(os.getloadavg())}


class NanoStep:
    "nanoGPT's step: its GPT, its AdamW groups, clipping at 1.0."
    def __init__(self, ng, vocab, tc, sampler, quiet=True):
        torch.manual_seed(0)
        cfg = ng.GPTConfig(block_size=SEQ, vocab_size=vocab, n_layer=L, n_head=H, n_embd=D, dropout=0.0, bias=False)
        with contextlib.redirect_stdout(open(os.devnull, "w")) if quiet else contextlib.nullcontext():
            self.model = ng.GPT(cfg)
            self.opt = self.model.configure_optimizers(tc.weight_decay, tc.lr, (tc.beta1, tc.beta2), "cpu")
        self.sampler, self.tc, self.step_n, self.loss = sampler, tc, 0, None

    def step(self, total=None):
        if total:
            for g in self.opt.param_groups: g["lr"] = lr_at(self.step_n, self.tc, total)
        x, y, _ = self.sampler.next_batch(BATCH)
        _, loss = self.model(torch.from_numpy(np.ascontiguousarray(x)).long(), torch.from_numpy(np.ascontiguousarray(y)).long())
        loss.backward(); torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step(); self.opt.zero_grad(set_to_none=True)
        self.step_n += 1; self.loss = loss.detach()


class KitStep:
    "The kit's step: `Trainer.train_step` on a `DecoderLM` (precision and compile as the CLI sets them)."
    def __init__(self, vocab, tc, sampler, out):
        torch.manual_seed(0)
        self.model = DecoderLM(ModelConfig(vocab_size=vocab, d_model=D, n_layers=L, n_heads=H, ffn_dim=341, dropout=0.0, max_seq_len=SEQ))
        self.tr = Trainer(self.model, None, sampler, {}, tc, out, "cpu", progress=False)
        self.tr._begin(); self.tr._zero_loss()

    def step(self, total=None):
        if total: self.tr.total = total
        self.tr.train_step()


def timed(stepper, n, clock=time.perf_counter) -> float:
    t = clock()
    for _ in range(n): stepper.step()
    return (clock() - t) / n * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nanogpt", default=os.environ.get("NANOGPT_DIR"))
    ap.add_argument("--blocks", type=int, default=7, help="interleaved timing blocks per variant")
    ap.add_argument("--block_steps", type=int, default=30)
    ap.add_argument("--variants", default="kit,kit_compile,kit_bf16")
    ap.add_argument("--loss_steps", type=int, default=0)
    ap.add_argument("--name", default="baby_gpt")
    ap.add_argument("--cpu_time", action="store_true", help="one torch thread, CPU time of the process (robust to other load)")
    args = ap.parse_args()
    if args.cpu_time: torch.set_num_threads(1)
    clock = time.process_time if args.cpu_time else time.perf_counter
    ng = load_nanogpt(args.nanogpt)
    src = data_dir() / "general" / "tinyshakespeare"
    tok = byte_tokenizer()
    train, val = split_stream(token_stream(load_domain([src / "input.txt"])["text"], tok), 0.1)
    out = Path(tempfile.mkdtemp(prefix="baby_gpt_"))
    base = dict(batch_size=BATCH, seq_len=SEQ, max_steps=10**6, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.1,
                beta2=0.99, grad_clip=1.0, seed=1337)
    kit_tc = {"kit": TrainConfig(**base, precision="fp32"), "kit_compile": TrainConfig(**base, precision="fp32", compile=True),
              "kit_bf16": TrainConfig(**base, precision="bf16"), "kit_auto": TrainConfig(**base, precision="auto")}
    names = ["nanoGPT", *args.variants.split(",")]
    steppers = {"nanoGPT": NanoStep(ng, tok.vocab_size, TrainConfig(**base), MixtureSampler({"g": train}, SEQ, seed=1))}
    for k in names[1:]:
        if k not in kit_tc: sys.exit(f"error: unknown variant {k!r}; choose from {sorted(kit_tc)}")
        steppers[k] = KitStep(tok.vocab_size, kit_tc[k], MixtureSampler({"g": train}, SEQ, seed=1), out / k)
    params = {"nanoGPT": sum(p.numel() for p in steppers["nanoGPT"].model.parameters())}
    params.update({k: steppers[k].model.num_params() for k in names[1:]})
    ctx0 = context()
    for k in names: timed(steppers[k], 5)          # warm up (and compile)
    ms = {k: [] for k in names}
    for b in range(args.blocks):
        for k in (names if b % 2 == 0 else names[::-1]): ms[k].append(timed(steppers[k], args.block_steps, clock))
        med = {k: statistics.median(v) for k, v in ms.items()}
        result = {
            "recipe": "nanoGPT baby GPT (CPU): byte tokens, seq 64, batch 12, 4L/4H/d128, dropout 0, AdamW (wd 0.1, beta2 0.99), clip 1.0",
            "params": params, "median_step_ms": med, "clock": "CPU time, one thread" if args.cpu_time else "wall time",
            "speed_vs_nanoGPT": {k: med["nanoGPT"] / med[k] for k in names[1:]},
            "timing": {"blocks": args.blocks, "blocks_done": b + 1, "block_steps": args.block_steps, "step_ms_per_block": ms},
            "machine": machine(), **ctx0, "loadavg_after": list(os.getloadavg()),
            "command": "python benchmarks/baby_gpt.py " + " ".join(sys.argv[1:]),
        }
        if b + 1 < args.blocks: write(args.name, result)   # after every block: a run cut short keeps what it measured
    if args.loss_steps:
        result["loss"] = loss_run(ng, tok, train, val, base, args.loss_steps, out)
    write(args.name, result)
    print(json.dumps({k: result[k] for k in ("median_step_ms", "speed_vs_nanoGPT", "loadavg", "loadavg_after")}, indent=1))


def loss_run(ng, tok, train, val, base, steps, out) -> dict:
    "Both trained `steps` steps with the recipe's schedule; validation loss every quarter."
    res = {}
    for k in ("nanoGPT", "kit"):
        tc = TrainConfig(**{**base, "max_steps": steps}, precision="fp32")
        s = MixtureSampler({"g": train}, SEQ, seed=tc.seed)
        st = NanoStep(ng, tok.vocab_size, tc, s) if k == "nanoGPT" else KitStep(tok.vocab_size, tc, s, out / "loss")
        curve, t = [], time.perf_counter()
        for i in range(steps):
            st.step(total=steps)
            if (i + 1) % max(1, steps // 4) == 0: curve.append({"step": i + 1, "val_loss": eval_loss(st.model, val, SEQ)})
        res[k] = {"val_curve": curve, "wall_s": time.perf_counter() - t}
    return res


if __name__ == "__main__":
    try: main()
    except KeyboardInterrupt: print("interrupted"); sys.exit(130)
    except SmaError as e: print(f"error: {e}"); sys.exit(2)
