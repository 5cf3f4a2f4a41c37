"""The kit's training step through its CLI (`sma_train_generalist`) against nanoGPT's own `train.py`, side by side.

Both train the baby-GPT shape on the same tokens: tinyshakespeare through the kit's byte tokenizer (vocabulary 258),
the first 90% for training. nanoGPT reads them as its `train.bin` / `val.bin` / `meta.pkl` (written to a temporary
directory, which is its working directory; its code is run from the checkout, never copied). Shape: seq 64, batch 12,
4 layers, 4 heads, d_model 128, dropout 0, no biases; nanoGPT's 4x GELU MLP against the kit's SwiGLU 341 (equal
parameter budget). Recipe: lr 1e-3 -> 1e-4 (warmup 100), AdamW (weight decay 0.1, beta2 0.99), clipping 1.0,
float32, torch.compile OFF on both (nanoGPT `--compile=False`, the kit without `--compile`), CPU. nanoGPT's cosine
runs over 2000 iterations (its recipe's length; it needs more than the warm-up), which does not change a step's cost.

A step's cost is measured two ways. (1) CPU time by differencing: each program runs `--steps` and then 2 x
`--steps` steps, and (CPU time of the long run - CPU time of the short run) / `--steps` is the cost of one step with
start-up, tokenising, evaluation and saving cancelled out (both runs have the same fixed parts). With one thread this
is the arithmetic the step costs and barely depends on other processes on the machine; it is the headline figure.
(2) Wall time as each program reports it: nanoGPT prints every iteration's time (`--log_interval=1`), the kit's
metrics.jsonl has the tokens/s of every 10-step window (evaluations outside the windows); the first `--skip` steps
are left out. On a loaded machine (2) measures the scheduler. Runs alternate (nanoGPT, kit, kit, nanoGPT, ...) so
both see the same background load; each gets `--threads` torch threads (OMP_NUM_THREADS, 1 by default).

    NANOGPT_DIR=path/to/nanoGPT SMA_DATA_DIR=path/to/data python benchmarks/nanogpt_cli.py [--steps 100] [--runs 2] [--threads 1]
"""
import argparse, json, os, pickle, re, resource, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).parent))
from common import machine, data_dir, write

SEQ, BATCH, D, L, H, FFN = 64, 12, 128, 4, 4, 341
RECIPE = dict(lr=1e-3, min_lr=1e-4, warmup=100, wd=0.1, beta2=0.99, clip=1.0)


def prepare(work: Path, corpus: Path) -> int:
    "nanoGPT's dataset folder `data/sma_bytes` in `work`, from the kit's byte tokens; returns the vocabulary size."
    from sma_kit.data import token_stream, split_stream, load_domain
    from sma_kit.tokenizer import byte_tokenizer
    tok = byte_tokenizer()
    train, val = split_stream(token_stream(load_domain([corpus / "input.txt"])["text"], tok), 0.1)
    d = work / "data" / "sma_bytes"; d.mkdir(parents=True)
    np.asarray(train, np.uint16).tofile(d / "train.bin"); np.asarray(val, np.uint16).tofile(d / "val.bin")
    (d / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": tok.vocab_size}))
    return tok.vocab_size


def nanogpt_cmd(ng: Path, steps: int, out: Path) -> list[str]:
    r = RECIPE
    flags = dict(dataset="sma_bytes", device="cpu", compile=False, dtype="float32", batch_size=BATCH, block_size=SEQ, n_layer=L,
                 n_head=H, n_embd=D, dropout=0.0, bias=False, learning_rate=r["lr"], min_lr=r["min_lr"], warmup_iters=r["warmup"],
                 lr_decay_iters=max(steps, 2000), max_iters=steps, beta2=r["beta2"], weight_decay=r["wd"], grad_clip=r["clip"],
                 gradient_accumulation_steps=1, eval_interval=10 * steps, eval_iters=2, log_interval=1,
                 always_save_checkpoint=False, out_dir=str(out))
    return [sys.executable, str(ng / "train.py"), *(f"--{k}={v}" for k, v in flags.items())]


def kit_cmd(corpus: Path, steps: int, out: Path) -> list[str]:
    r = RECIPE
    flags = dict(data_dir=corpus, output_dir=out, tokenizer="byte", device="cpu", d_model=D, n_layers=L, n_heads=H, dim_feedforward=FFN,
                 dropout=0.0, batch_size=BATCH, seq_len=SEQ, max_steps=steps, lr=r["lr"], min_lr=r["min_lr"], warmup_steps=r["warmup"],
                 weight_decay=r["wd"], beta2=r["beta2"], grad_clip=r["clip"], eval_every=10 * steps, log_every=10, precision="fp32")
    exe = shutil.which("sma_train_generalist") or sys.exit("error: sma_train_generalist is not installed (pip install -e .)")
    return [exe, *(a for k, v in flags.items() for a in (f"--{k}", str(v))), "--quiet", "--overwrite"]


def step_ms(name: str, stdout: str, out: Path, skip: int) -> list[float]:
    "Milliseconds per step after the first `skip` steps, as the program reports them."
    if name == "nanoGPT":
        return [float(t) for i, t in re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", stdout, re.M) if int(i) >= skip]
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return [1e3 * BATCH * SEQ / r["tokens_per_s"] for r in recs if r["step"] - 10 >= skip]


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(name, cmd, out, cwd, env, skip) -> dict:
    load, cpu = os.getloadavg()[0], child_cpu()
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, child_cpu() - cpu
    if p.returncode: sys.exit(f"error: {name} failed (exit {p.returncode}): {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    ms = step_ms(name, p.stdout, out, skip)
    if not ms: sys.exit(f"error: no step times in {name}'s output")
    return {"reported_median_step_ms": statistics.median(ms), "steps_timed": len(ms), "wall_s": wall, "cpu_s": cpu,
            "load_before": load, "load_after": os.getloadavg()[0]}


def summary(res: dict, a, vocab: int) -> dict:
    "The results of the rounds done so far."
    cpu = {k: statistics.median(x["cpu_ms_per_step"] for x in v) for k, v in res.items()}
    wall = {k: statistics.median(x["long"]["reported_median_step_ms"] for x in v) for k, v in res.items()}
    return {"what": "training step cost through each program's own CLI: sma_train_generalist vs nanoGPT's train.py, same byte tokens, "
                    "baby-GPT shape at equal parameter budget, float32, torch.compile off on both, alternating runs",
            "rounds_done": len(res["kit"]), "vocab_size": vocab, "steps_short_long": [a.steps, 2 * a.steps], "skip": a.skip, "threads": a.threads,
            "cpu_ms_per_step_median": cpu, "kit_speed_vs_nanoGPT_cpu": cpu["nanoGPT"] / cpu["kit"],
            "per_round_ratio_cpu": [n["cpu_ms_per_step"] / k["cpu_ms_per_step"] for n, k in zip(res["nanoGPT"], res["kit"])],
            "reported_wall_ms_per_step_median": wall, "kit_speed_vs_nanoGPT_reported_wall": wall["nanoGPT"] / wall["kit"],
            "runs": res, "machine": machine(), "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
            text=True, cwd=Path(__file__).parent).stdout.strip(), "command": "python benchmarks/nanogpt_cli.py " + " ".join(sys.argv[1:])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nanogpt", default=os.environ.get("NANOGPT_DIR"))
    ap.add_argument("--steps", type=int, default=100, help="steps of the short run (the long one has twice as many)")
    ap.add_argument("--skip", type=int, default=20, help="warm-up steps left out of each run's median")
    ap.add_argument("--runs", type=int, default=2, help="rounds (a short and a long run) of each program, alternating")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both programs")
    a = ap.parse_args()
    ng = Path(a.nanogpt or "")
    if not (ng / "train.py").is_file(): sys.exit("error: give nanoGPT's checkout with --nanogpt DIR or NANOGPT_DIR (it must hold train.py)")
    corpus = data_dir() / "general" / "tinyshakespeare"
    work = Path(tempfile.mkdtemp(prefix="nanogpt_cli_"))
    vocab = prepare(work, corpus)
    (work / "configurator.py").symlink_to((ng / "configurator.py").resolve())   # train.py execs it from its working directory
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    cmds = {"nanoGPT": lambda n: (nanogpt_cmd(ng, n, work / "out_nanogpt"), work / "out_nanogpt"),
            "kit": lambda n: (kit_cmd(corpus, n, work / "out_kit"), work / "out_kit")}
    res = {k: [] for k in cmds}
    for r in range(a.runs):
        for k in (["nanoGPT", "kit"] if r % 2 == 0 else ["kit", "nanoGPT"]):
            short, long = (run(k, *cmds[k](n), work, env, a.skip) for n in (a.steps, 2 * a.steps))
            res[k].append({"cpu_ms_per_step": 1e3 * (long["cpu_s"] - short["cpu_s"]) / a.steps, "short": short, "long": long})
            print(f"round {r + 1} {k:8s} {res[k][-1]['cpu_ms_per_step']:7.1f} CPU ms/step, reported {long['reported_median_step_ms']:7.1f} "
                  f"ms/step wall (load {short['load_before']:.1f})", flush=True)
        write("nanogpt_cli", result := summary(res, a, vocab))   # after every round: a run cut short keeps what it measured
    cpu = result["cpu_ms_per_step_median"]
    print(f"kit / nanoGPT speed, CPU time per step: {result['kit_speed_vs_nanoGPT_cpu']:.2f}x ({cpu['kit']:.1f} vs {cpu['nanoGPT']:.1f} ms); "
          f"reported wall time: {result['kit_speed_vs_nanoGPT_reported_wall']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try: main()
    except KeyboardInterrupt: print("interrupted", file=sys.stderr); sys.exit(130)
