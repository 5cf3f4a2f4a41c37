"""bf16 autocast against float32 for the kit's PyTorch training step on this CPU, at two shapes.

Shapes: baby-GPT (4 layers, d_model 128, SwiGLU 341, seq 64, batch 12) and seed000 (4 layers, d_model 256,
8 heads, SwiGLU 1024, vocabulary 8192, seq 128, batch 16). For each: the step time of `Trainer.train_step`
under `--precision fp32` and `--precision bf16`, in interleaved blocks (medians; the load average is recorded),
and the loss of both runs from the same seed and data on tinyshakespeare bytes (`--loss_steps` steps, the
validation loss every quarter), with the largest relative gap between the two curves. What `--precision auto`
would pick on this machine is recorded too (`sma_kit.torch.train.pick_precision`).

    SMA_DATA_DIR=path/to/data python benchmarks/precision_cpu.py [--blocks 5] [--block_steps 10] [--loss_steps 300]
"""
import argparse, json, os, statistics, sys, tempfile, time
from pathlib import Path
import torch
from common import machine, data_dir, write
from baby_gpt import context

from sma_kit.config import ModelConfig, TrainConfig
from sma_kit.data import token_stream, split_stream, MixtureSampler, load_domain
from sma_kit.tokenizer import byte_tokenizer
from sma_kit.torch.model import DecoderLM
from sma_kit.torch.train import Trainer, eval_loss, pick_precision, cpu_bf16_native

SHAPES = {
    "baby_gpt": (dict(vocab_size=259, d_model=128, n_layers=4, n_heads=4, ffn_dim=341, dropout=0.0, max_seq_len=64), 12, 64),
    "seed000": (dict(vocab_size=8192, d_model=256, n_layers=4, n_heads=8, ffn_dim=1024, dropout=0.0, max_seq_len=128), 16, 128),
}


def trainer(shape, precision, train, out, steps=10**6):
    cfg, batch, seq = SHAPES[shape]
    torch.manual_seed(0)
    tc = TrainConfig(batch_size=batch, seq_len=seq, max_steps=steps, lr=1e-3, warmup_steps=min(100, steps // 10), precision=precision, seed=0)
    t = Trainer(DecoderLM(ModelConfig(**cfg)), None, MixtureSampler({"g": train}, seq, seed=0), {}, tc, out, "cpu", progress=False)
    t._begin(); t._zero_loss()
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--block_steps", type=int, default=10)
    ap.add_argument("--loss_steps", type=int, default=300)
    args = ap.parse_args()
    tok = byte_tokenizer()
    train, val = split_stream(token_stream(load_domain([data_dir() / "general" / "tinyshakespeare" / "input.txt"])["text"], tok), 0.1)
    out = Path(tempfile.mkdtemp(prefix="precision_"))
    res = {"cpu_bf16_native": cpu_bf16_native(), "shapes": {}, "machine": machine(), **context()}
    for shape in SHAPES:
        ts = {p: trainer(shape, p, train, out / f"{shape}_{p}") for p in ("fp32", "bf16")}
        for t in ts.values(): t.train_step()                      # warm up
        ms = {p: [] for p in ts}
        for _ in range(args.blocks):
            for p, t in ts.items():
                t0 = time.perf_counter()
                for _ in range(args.block_steps): t.train_step()
                ms[p].append((time.perf_counter() - t0) / args.block_steps * 1000)
        med = {p: statistics.median(v) for p, v in ms.items()}
        curves = {}
        for p in ("fp32", "bf16"):
            t, c = trainer(shape, p, train, out / f"{shape}_{p}_loss", args.loss_steps), []
            for i in range(args.loss_steps):
                t.train_step()
                if (i + 1) % max(1, args.loss_steps // 4) == 0: c.append(eval_loss(t.model, val[:20000], SHAPES[shape][2]))
            curves[p] = c
        gap = max(abs(a - b) / a for a, b in zip(curves["fp32"], curves["bf16"]))
        auto = pick_precision(ts["fp32"].model, torch.device("cpu"), "auto", SHAPES[shape][1], SHAPES[shape][2])
        res["shapes"][shape] = {"median_step_ms": med, "bf16_speedup": med["fp32"] / med["bf16"], "step_ms_per_block": ms,
                                "val_loss_curves": curves, "max_relative_val_gap": gap, "auto_picks": auto}
        print(shape, json.dumps(res["shapes"][shape]))
    res["loadavg_after"] = list(os.getloadavg())
    write("precision_cpu", res)


if __name__ == "__main__":
    try: main()
    except KeyboardInterrupt: print("interrupted"); sys.exit(130)
