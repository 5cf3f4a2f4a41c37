"""Greedy decoding speed on this CPU, seed000 shape (vocabulary 8192, 128-token window), random weights:
the generalist against `transformers`' LlamaForCausalLM of the same shape, and shiftable models with four
specialists (copy branches) at the FFN and at the attention under top-1 routing (sparse fast path; the
attention with the 'all' and the 'lazy' key/value schemes), the reference path (`set_sparse(False)`) and
soft routing for reference. Speed does not depend on what the weights learned; random gate rows spread
the tokens over the experts, so at batch 16 several experts run per step.

Batch 1 and batch 16, 96 new tokens after an 8-token prompt, torch's default threads unless `--threads`. The variants run
interleaved (each repetition times every variant once, in turn), and the figures are medians over the
repetitions: the machine may be shared, so the load average is recorded before and after.

`--cpu_time` (with `--threads 1`) times each variant by the process's CPU time instead of the wall clock: on a
machine shared with other jobs a single-threaded process's CPU time is what the decoding costs, while its wall time
is mostly the scheduler's.

    python benchmarks/generation_speed.py [--reps 5] [--new_tokens 96] [--batches 1 16] [--threads N] [--cpu_time]
"""
import argparse, os, statistics, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))

SPECIALISTS = ["business", "datascience", "math", "medical"]


def commit() -> str:
    try: return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError: return ""


def variants(cfg):
    "name -> (model, how to decode it) for every row of the table."
    import torch, transformers
    from sma_kit.torch.model import DecoderLM, generate
    from sma_kit.torch.shift import ShiftableLM
    torch.manual_seed(0)
    gen = DecoderLM(cfg).eval()
    lcfg = transformers.LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_dim,
                                    num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
                                    max_position_embeddings=cfg.max_seq_len, tie_word_embeddings=True, rms_norm_eps=cfg.norm_eps)
    llama = transformers.LlamaForCausalLM(lcfg).eval()

    def kit(m, **setup):
        def run(ids, n):
            if "routing" in setup: m.set_routing(setup["routing"], 1)
            if "fast" in setup: m.set_sparse(setup["fast"], setup.get("kv"))
            return generate(m, ids, n, temperature=0.0)
        return run

    def hf(ids, n):
        with torch.no_grad():
            out = llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=0, eos_token_id=None)
        return out[:, ids.shape[1]:].tolist()

    ffn = ShiftableLM.from_base_model(gen, SPECIALISTS, expert_site="ffn").eval()
    att = ShiftableLM.from_base_model(gen, SPECIALISTS, expert_site="attention").eval()
    return {"generalist": kit(gen), "transformers Llama": hf,
            "ffn top-1": kit(ffn, routing="topk", fast=True), "ffn top-1 reference path": kit(ffn, routing="topk", fast=False),
            "ffn soft": kit(ffn, routing="soft"),
            "attention top-1 kv=all": kit(att, routing="topk", fast=True, kv="all"),
            "attention top-1 kv=lazy": kit(att, routing="topk", fast=True, kv="lazy"),
            "attention top-1 reference path": kit(att, routing="topk", fast=False), "attention soft": kit(att, routing="soft")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--new_tokens", type=int, default=96)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 is steadier on a loaded machine")
    ap.add_argument("--cpu_time", action="store_true", help="time by process CPU time (needs --threads 1)")
    ap.add_argument("--name", default="generation_speed", help="results file name (benchmarks/results/NAME.json)")
    a = ap.parse_args()
    if a.cpu_time and a.threads != 1: sys.exit("error: --cpu_time needs --threads 1 (CPU time of several threads counts their waiting too)")
    clock = time.process_time if a.cpu_time else time.perf_counter
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    from common import machine, write
    from sma_kit.config import preset
    cfg = preset("seed000", vocab_size=8192, max_seq_len=128)
    runs = variants(cfg)
    load = {"before": os.getloadavg()}
    res = {}
    for B in a.batches:
        ids = torch.randint(0, cfg.vocab_size, (B, 8), generator=torch.Generator().manual_seed(B))
        times = {k: [] for k in runs}
        for run in runs.values(): run(ids, 4)                                      # warm-up
        for _ in range(a.reps):
            for k, run in runs.items():
                t = clock(); out = run(ids, a.new_tokens); dt = clock() - t
                assert sum(map(len, out)) == B * a.new_tokens, (k, [len(o) for o in out])
                times[k].append(B * a.new_tokens / dt)
        tps = {k: statistics.median(v) for k, v in times.items()}
        ratios = {k: v / tps["generalist"] for k, v in tps.items() if k != "generalist"}
        ratios["generalist vs transformers Llama"] = tps["generalist"] / tps["transformers Llama"]
        res[f"batch {B}"] = {"tokens_per_s_median": tps, "tokens_per_s_all": times, "ratio_to_generalist": ratios}
        print(f"batch {B}")
        for k, v in tps.items(): print(f"  {k:32s} {v:8.0f} tokens/s" + (f"  ({ratios[k]:.2f}x the generalist)" if k in ratios else ""))
        print(f"  generalist / transformers Llama: {ratios['generalist vs transformers Llama']:.2f}x")
    load["after"] = os.getloadavg()
    write(a.name, {"what": "greedy decoding tokens/s (medians of interleaved repetitions), seed000 shape, random weights, 4 specialists (copy branches)",
                               "goals": {"generalist vs transformers Llama": 1.0, "ffn top-1": 0.9, "attention top-1": 0.75},
                               "results": res, "settings": vars(a), "load_average": load, "commit": commit(), "machine": machine(),
                               "command": "python benchmarks/generation_speed.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    try: main()
    except KeyboardInterrupt: print("interrupted", file=sys.stderr); sys.exit(130)
