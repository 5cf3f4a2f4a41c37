"""Greedy decoding speed on this CPU: the generalist vs a shiftable model with four specialists under top-1 and
soft routing, seed000 shape (vocabulary 8192, 128-token window), random weights (speed does not depend on what
the weights learned; top-1 routing still runs one expert per token). Best of `--reps` runs of 96 new tokens after
an 8-token prompt, batch 1, the default torch threads.

    python benchmarks/generation_speed.py [--reps 5]
"""
import argparse, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--new_tokens", type=int, default=96)
    a = ap.parse_args()
    import torch
    from common import machine, write
    from sma_kit.config import preset
    from sma_kit.torch.model import DecoderLM, generate
    from sma_kit.torch.shift import ShiftableLM
    torch.manual_seed(0)
    cfg = preset("seed000", vocab_size=8192, max_seq_len=128)
    gen = DecoderLM(cfg).eval()
    sm = ShiftableLM.from_base_model(gen, ["business", "datascience", "math", "medical"]).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 8))

    @torch.no_grad()
    def speed(m):
        generate(m, ids, 8)
        best = 0.0
        for _ in range(a.reps):
            t = time.perf_counter(); out = generate(m, ids, a.new_tokens, temperature=0.0)
            best = max(best, len(out[0]) / (time.perf_counter() - t))
        return best

    tps = {"generalist": speed(gen)}
    sm.set_routing("topk", 1); tps["shiftable top-1"] = speed(sm)
    sm.set_routing("soft"); tps["shiftable soft"] = speed(sm)
    ratios = {k: v / tps["generalist"] for k, v in tps.items() if k != "generalist"}
    for k, v in tps.items(): print(f"{k:16s} {v:7.0f} tokens/s" + (f"  ({ratios[k]:.2f}x the generalist)" if k in ratios else ""))
    write("generation_speed", {"what": "greedy decoding tokens/s, batch 1, seed000 shape, 4 specialists (copy branches at the attention)",
                               "tokens_per_s": tps, "ratio_to_generalist": ratios, "target_top1_ratio": 0.75,
                               "settings": vars(a), "machine": machine(),
                               "command": "python benchmarks/generation_speed.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
