"""nanoGPT's CPU "baby GPT" recipe on tinyshakespeare, with sma_kit's generalist.

Byte tokenizer, seq_len 64, batch 12, 4 layers, 4 heads, d_model 128, SwiGLU hidden 341 (3 x 128 x 341
~= the 2 x 128 x 512 of a 4x MLP), 2000 steps, lr 1e-3 -> 1e-4, warmup 100, weight decay 0.1, beta2 0.99,
clip 1.0, dropout 0. Validation loss is the kit's definition (every non-overlapping window of the last
10%). Training tokens/s is compared, in the same process and interleaved, with a plain-PyTorch reference
LM of the same shape built from nn.TransformerEncoderLayer (the layer the original generalist used).

    SMA_DATA_DIR=../shared/data python benchmarks/baby_gpt.py [--steps 2000] [--out DIR]
"""
import argparse, json, math, statistics, tempfile, time
from pathlib import Path
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from common import machine, data_dir, write, RESULTS

from sma_kit.config import ModelConfig, TrainConfig, lr_at
from sma_kit.data import token_stream, split_stream, MixtureSampler, load_domain
from sma_kit.tokenizer import byte_tokenizer
from sma_kit.torch.model import DecoderLM
from sma_kit.torch.train import train_generalist, eval_loss, load_model

SEQ, BATCH, D, L, H = 64, 12, 128, 4, 4


class ReferenceLM(nn.Module):
    "Embedding + learned positions + nn.TransformerEncoderLayer x L (pre-norm, GELU, 4x MLP, causal) + tied head."
    def __init__(self, vocab):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, D), nn.Embedding(SEQ, D)
        layer = nn.TransformerEncoderLayer(D, H, 4 * D, dropout=0.0, activation="gelu", batch_first=True, norm_first=True, bias=False)
        self.enc = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(SEQ), persistent=False)
        for p in self.parameters():
            if p.dim() >= 2: nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        h = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        h = self.norm(self.enc(h, mask=self.mask[:T, :T], is_causal=True))
        logits = h @ self.tok.weight.T
        return logits if targets is None else (logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten()))


def adamw(model, tc):
    ps = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in ps if p.dim() >= 2], "weight_decay": tc.weight_decay},
                              {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0}], lr=tc.lr, betas=(tc.beta1, tc.beta2))


def timed_steps(model, opt, sampler, n):
    "Seconds for n full training steps (forward, backward, clip, AdamW)."
    model.train(); t = time.perf_counter()
    for _ in range(n):
        x, y, _ = sampler.next_batch(BATCH)
        _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
        loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def train_reference(train, val, tc, steps, vocab):
    torch.manual_seed(tc.seed)
    ref = ReferenceLM(vocab); opt = adamw(ref, tc); s = MixtureSampler({"general": train}, SEQ, seed=tc.seed)
    curve = []
    for step in range(steps):
        for g in opt.param_groups: g["lr"] = lr_at(step, tc, steps)
        x, y, _ = s.next_batch(BATCH)
        _, loss = ref(torch.from_numpy(x), torch.from_numpy(y))
        loss.backward(); torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0); opt.step(); opt.zero_grad(set_to_none=True)
        if (step + 1) % 250 == 0 or step + 1 == steps:
            curve.append({"step": step + 1, "val_loss": eval_loss(ref, val, SEQ)})
    return ref, curve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=6, help="interleaved timing blocks per model")
    ap.add_argument("--block_steps", type=int, default=40)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    src = data_dir() / "general" / "tinyshakespeare"
    out = Path(args.out or tempfile.mkdtemp(prefix="baby_gpt_"))
    tc = TrainConfig(batch_size=BATCH, seq_len=SEQ, max_steps=args.steps, lr=1e-3, min_lr=1e-4, warmup_steps=100,
                     weight_decay=0.1, beta2=0.99, grad_clip=1.0, eval_every=250, log_every=50, seed=1337)
    cfg = dict(d_model=D, n_layers=L, n_heads=H, ffn_dim=341, dropout=0.0, max_seq_len=SEQ)

    t0 = time.time()
    res = train_generalist(src, out / "sma", cfg, tc, tokenizer="byte", device="cpu", overwrite=True, progress=False)
    ours_wall = time.time() - t0
    recs = [json.loads(l) for l in (out / "sma" / "metrics.jsonl").read_text().splitlines()]

    tok = byte_tokenizer()
    train, val = split_stream(token_stream(load_domain([src / "input.txt"])["text"], tok), 0.1)
    t0 = time.time()
    ref, ref_curve = train_reference(train, val, tc, args.steps, tok.vocab_size)
    ref_wall = time.time() - t0

    # interleaved same-harness throughput: fresh models, same sampler settings, alternating blocks
    torch.manual_seed(0)
    models = {"sma_kit": DecoderLM(ModelConfig(vocab_size=tok.vocab_size, **cfg)), "reference": ReferenceLM(tok.vocab_size)}
    opts = {k: adamw(m, tc) for k, m in models.items()}
    samplers = {k: MixtureSampler({"general": train}, SEQ, seed=1) for k in models}
    for k in models: timed_steps(models[k], opts[k], samplers[k], 10)  # warm up
    times = {k: [] for k in models}
    for _ in range(args.blocks):
        for k in models: times[k].append(timed_steps(models[k], opts[k], samplers[k], args.block_steps))
    tps = {k: statistics.median(args.block_steps * BATCH * SEQ / t for t in v) for k, v in times.items()}

    n_ref = sum(p.numel() for p in models["reference"].parameters())
    result = {
        "recipe": "nanoGPT baby GPT (CPU): byte tokens, seq 64, batch 12, 4L/4H/d128, 2000 steps, lr 1e-3->1e-4, warmup 100, wd 0.1, beta2 0.99, clip 1, dropout 0",
        "steps": args.steps,
        "sma_kit": {"params": res["n_params"], "best_val_loss": res["best_val_loss"], "best_step": res["best_step"],
                    "final_val_loss": res["last_val"].get("val_loss"), "wall_s": ours_wall,
                    "val_curve": [{"step": r["step"], "val_loss": r["val_loss"]} for r in recs if "val_loss" in r]},
        "reference_TransformerEncoderLayer": {"params": n_ref, "final_val_loss": ref_curve[-1]["val_loss"], "wall_s": ref_wall, "val_curve": ref_curve},
        "nanoGPT_reported_val_loss": 1.898,
        "target_val_loss": 1.80,
        "train_tokens_per_s": tps,
        "tokens_per_s_ratio_sma_over_reference": tps["sma_kit"] / tps["reference"],
        "timing": {"blocks": args.blocks, "block_steps": args.block_steps, "per_block_s": times},
        "machine": machine(),
    }
    write("baby_gpt", result)

    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    tr = [(r["step"], r["train_loss"]) for r in recs]
    ax.plot(*zip(*tr), label="sma_kit train (50-step mean)", alpha=0.6)
    ax.plot(*zip(*[(c["step"], c["val_loss"]) for c in result["sma_kit"]["val_curve"]]), "o-", label="sma_kit validation")
    ax.plot(*zip(*[(c["step"], c["val_loss"]) for c in ref_curve]), "s--", label="reference (TransformerEncoderLayer) validation")
    ax.axhline(1.898, color="grey", ls=":", label="nanoGPT baby GPT, 1.898")
    ax.axhline(1.80, color="red", ls=":", label="target 1.80")
    ax.set_xlabel("step"); ax.set_ylabel("cross-entropy (nats/byte)"); ax.set_ylim(1.3, 3.0); ax.legend(fontsize=8); ax.grid(alpha=0.3)
    ax.set_title("Baby GPT recipe on tinyshakespeare")
    fig.tight_layout(); fig.savefig(RESULTS / "baby_gpt_loss.png", dpi=120)
    print(json.dumps({k: result[k] for k in ("tokens_per_s_ratio_sma_over_reference", "train_tokens_per_s")}, indent=1))
    print(f"sma_kit best val {res['best_val_loss']:.4f}, reference final val {ref_curve[-1]['val_loss']:.4f}")


if __name__ == "__main__":
    main()
