"""GSM8K generation through `sma_evaluate` (`sma_kit.qa_eval.evaluate_main`): padded batches against one prompt at a time.

Model: the `seed000` shape (d_model 256, 8 heads, 4 layers, SwiGLU 1024, window 128) with RANDOM weights (seeded) and a
byte-level BPE of 8192 ids trained on the GSM8K train questions; random weights never write end-of-text, so every
prompt runs its full `--new_tokens` (the worst case for batching: no row finishes early). Prompts: the first
`--questions` of a seeded sample of the GSM8K test split, zero-shot (`--gsm8k_shots 0`), so prompt lengths differ and
batches are left padded. The same `evaluate_main` call runs with `--batch_size 1` and `--batch_size B`, alternating,
`--reps` times each; the ratio compares the medians. Greedy outputs of both runs must be identical (checked, recorded).

    SMA_DATA_DIR=../shared/data python benchmarks/eval_batching.py [--questions 64] [--new_tokens 48] [--batch_size 16] [--reps 2] [--threads N]
"""
import argparse, json, os, statistics, subprocess, tempfile, time
from pathlib import Path
import torch
from common import machine, data_dir, write

from sma_kit.config import preset
from sma_kit.qa_eval import evaluate_main, read_gsm8k
from sma_kit.tokenizer import train_bpe
from sma_kit.torch.model import DecoderLM
from sma_kit.torch.train import save_model


def make_model(out: Path, data: Path) -> Path:
    "A seed000-shape generalist with random weights and a BPE trained on GSM8K train questions."
    tok = train_bpe([r["question"] for r in read_gsm8k("train", data)], vocab_size=8192)
    torch.manual_seed(0)
    save_model(DecoderLM(preset("seed000", vocab_size=tok.vocab_size)).eval(), out, tok)
    return out


def run(model_dir: Path, work: Path, data: Path, a) -> tuple[float, float, list[str]]:
    """Wall time and CPU time (this process, all its threads) of one `evaluate_main` GSM8K run with `batch_size`, and
    its outputs in item order. With one torch thread the CPU time barely depends on what else the machine runs."""
    out = work / f"bs{a.bs}"
    t0, c0 = time.perf_counter(), time.process_time()
    evaluate_main([model_dir], "gsm8k", sample_size=a.questions, seed=42, save_examples=True, num_examples=a.questions,
                  no_plots=True, max_new_tokens=a.new_tokens, temperature=0.0, device="cpu", output_dir=out, data_dir=data,
                  gsm8k_shots=0, batch_size=a.bs, progress=False, log=lambda *_: None)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    ex = [json.loads(l) for l in (out / "examples" / "gsm8k.jsonl").read_text().splitlines()]
    return dt, dc, [e["output"] for e in sorted(ex, key=lambda e: e["id"])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--new_tokens", type=int, default=48)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)")
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    data = data_dir()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = make_model(tmp / "seed000", data)
        times, cpu, outs = {1: [], args.batch_size: []}, {1: [], args.batch_size: []}, {}
        for r in range(args.reps):
            for bs in (args.batch_size, 1) if r % 2 else (1, args.batch_size):   # alternate the order
                a = argparse.Namespace(**{**vars(args), "bs": bs})
                dt, dc, o = run(model_dir, tmp, data, a)
                times[bs].append(dt); cpu[bs].append(dc); outs[bs] = o
                print(f"batch_size {bs:>3}: {dt:.1f} s wall, {dc:.1f} s CPU")
    one, bat = statistics.median(times[1]), statistics.median(times[args.batch_size])
    cone, cbat = statistics.median(cpu[1]), statistics.median(cpu[args.batch_size])
    same = outs[1] == outs[args.batch_size]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = dict(machine=machine(), commit=commit, load_average_before=load_before, load_average_after=os.getloadavg(),
               model="seed000 shape, random weights (torch.manual_seed(0)), BPE 8192 trained on GSM8K train questions",
               path="sma_kit.qa_eval.evaluate_main (sma_evaluate), datasets=gsm8k, gsm8k_shots=0, greedy",
               threads=torch.get_num_threads(), questions=args.questions, new_tokens=args.new_tokens, batch_size=args.batch_size, reps=args.reps,
               seconds_one_at_a_time=times[1], seconds_batched=times[args.batch_size],
               ratio_batched_vs_one=round(bat / one, 3),
               cpu_seconds_one_at_a_time=cpu[1], cpu_seconds_batched=cpu[args.batch_size], ratio_cpu_batched_vs_one=round(cbat / cone, 3), goal="<= 0.3", greedy_outputs_identical=same)
    print(f"batched / one at a time: {bat / one:.3f}x wall, {cbat / cone:.3f}x CPU (goal <= 0.3); greedy outputs identical: {same}")
    write("eval_batching" + (f"_threads{args.threads}" if args.threads else ""), res)
    if not same: raise SystemExit("greedy outputs differ between batched and one-at-a-time generation")


if __name__ == "__main__":
    main()
