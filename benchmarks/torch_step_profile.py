"""Where the kit's PyTorch training step goes against nanoGPT's, at the baby-GPT shape of `baby_gpt.py`: one thread,
CPU time, interleaved. Prints forward, backward and optimizer (clipping + AdamW) per step for each, then a
`torch.profiler` table of the operators by self time (the profiler's clock is the wall clock: on a loaded machine read
its shares, not its milliseconds). Writes `benchmarks/results/torch_step_profile.json`.

    NANOGPT_DIR=path/to/nanoGPT SMA_DATA_DIR=path/to/data OMP_NUM_THREADS=1 python benchmarks/torch_step_profile.py [--rounds 3] [--steps 20]
"""
import argparse, os, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
import torch
import baby_gpt as B
from common import machine, data_dir, write
from sma_kit.config import TrainConfig
from sma_kit.data import token_stream, split_stream, MixtureSampler, load_domain
from sma_kit.tokenizer import byte_tokenizer
from sma_kit.torch.train import clip_grads


def pieces(st, kit: bool, n: int) -> list[float]:
    "Milliseconds of CPU per step in the forward (with the loss), the backward and the optimizer."
    tot = [0.0, 0.0, 0.0]
    for _ in range(n):
        if kit:
            tr = st.tr
            x, y, d = (torch.from_numpy(a) for a in tr.sampler.next_batch(B.BATCH))
            t0 = time.process_time(); loss, _ = tr.loss_fn(tr.model, x, y, d); t1 = time.process_time()
            loss.backward(); t2 = time.process_time()
            clip_grads(tr._params, 1.0); tr.opt.step(); tr.opt.zero_grad(set_to_none=True)
        else:
            x, y, _ = st.sampler.next_batch(B.BATCH)
            x, y = (torch.from_numpy(np.ascontiguousarray(a)).long() for a in (x, y))
            t0 = time.process_time(); loss = st.model(x, y)[1]; t1 = time.process_time()
            loss.backward(); t2 = time.process_time()
            torch.nn.utils.clip_grad_norm_(st.model.parameters(), 1.0); st.opt.step(); st.opt.zero_grad(set_to_none=True)
        t3 = time.process_time()
        for i, dt in enumerate((t1 - t0, t2 - t1, t3 - t2)): tot[i] += dt
    return [1e3 * t / n for t in tot]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nanogpt", default=os.environ.get("NANOGPT_DIR"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rows", type=int, default=25, help="operators in each printed profile table")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ng = B.load_nanogpt(a.nanogpt)
    tok = byte_tokenizer()
    train, _ = split_stream(token_stream(load_domain([data_dir() / "general" / "tinyshakespeare" / "input.txt"])["text"], tok), 0.1)
    base = dict(batch_size=B.BATCH, seq_len=B.SEQ, max_steps=10**6, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.1,
                beta2=0.99, grad_clip=1.0, seed=1337)
    steppers = {"nanoGPT": B.NanoStep(ng, tok.vocab_size, TrainConfig(**base), MixtureSampler({"g": train}, B.SEQ, seed=1)),
                "kit": B.KitStep(tok.vocab_size, TrainConfig(**base, precision="fp32"), MixtureSampler({"g": train}, B.SEQ, seed=1),
                                 Path(tempfile.mkdtemp(prefix="step_profile_")))}
    load = list(os.getloadavg())
    for k, s in steppers.items(): pieces(s, k == "kit", 3)
    runs = {k: [] for k in steppers}
    for r in range(a.rounds):
        for k in (list(steppers) if r % 2 == 0 else list(steppers)[::-1]): runs[k].append(pieces(steppers[k], k == "kit", a.steps))
    med = {k: dict(zip(("forward", "backward", "optimizer"), (statistics.median(p[i] for p in v) for i in range(3)))) for k, v in runs.items()}
    for k, m in med.items(): print(f"{k:8s} " + "  ".join(f"{p} {ms:6.1f} ms" for p, ms in m.items()))
    tables = {}
    from torch.profiler import profile, ProfilerActivity
    for k, s in steppers.items():
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(10): s.step()
        tables[k] = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows)
        print(f"== {k}, 10 steps\n{tables[k]}")
    write("torch_step_profile", {"what": "one thread, CPU time per step by piece (medians of interleaved rounds), baby-GPT shape",
                                 "median_ms": med, "rounds": runs, "profile_tables": tables, "machine": machine(), **B.context(),
                                 "loadavg_before": load, "loadavg_after": list(os.getloadavg()),
                                 "command": "python benchmarks/torch_step_profile.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    try: main()
    except KeyboardInterrupt: print("interrupted", file=sys.stderr); sys.exit(130)
