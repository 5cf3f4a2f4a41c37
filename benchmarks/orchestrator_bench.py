"""Orchestrator benchmark: routing accuracy, composed requests, parallel execution and orchestration overhead on a project
trained from the real corpora.

Project (`--train`): the shiftable-eval staging of `$SMA_DATA_DIR` (general, math, medical, datascience, business; `--mb` MB per
domain), a generalist of d_model 128, 2 layers, 4 heads, SwiGLU 384, seq 128, BPE 2048, then the shiftable model with one
specialist per domain. Held-out prompts: GSM8K test questions, PubMedQA questions, scikit-learn guide and FOMC statement
passages that do not occur in the project's corpus. Torch runs one intra-op thread per call (two calls can use two cores).

    SMA_DATA_DIR=../shared/data python benchmarks/orchestrator_bench.py --train --out /tmp/orch_proj
    SMA_DATA_DIR=../shared/data python benchmarks/orchestrator_bench.py --project /tmp/orch_proj
"""
import argparse, json, os, statistics, sys, time
from pathlib import Path
import torch
from common import machine, data_dir, write

from sma_kit.config import TrainConfig
from sma_kit.backend import load_backend
from sma_kit.orchestrator_plan import Subtask, Route, Plan, specialists_from_project
from sma_kit.orchestrator import Orchestrator, execute
from sma_kit.orchestrator_eval import orchestrate_eval, heldout_prompts, composed_requests, corpus_text

SHAPE = dict(d_model=128, n_layers=2, n_heads=4, ffn_dim=384, max_seq_len=128)


def train(out: Path, mb: float, gen_steps: int, spec_steps: int, batch_size: int) -> dict:
    from shiftable_eval import stage
    B = load_backend("torch")
    data = stage(data_dir(), out / "data", mb)
    tc = lambda steps, lr: TrainConfig(batch_size=batch_size, seq_len=128, max_steps=steps, lr=lr, warmup_steps=min(20, steps // 10), eval_every=steps, seed=1337)
    t0 = time.time()
    rg = B.train_generalist(data, out / "outputs/general", SHAPE, tc(gen_steps, 2e-3), tokenizer="bpe", vocab_size=2048, device="cpu", overwrite=True, progress=False)
    t1 = time.time()
    B.train_specialists(out / "outputs/general", out / "outputs/shiftable", data_dir=data, tc=tc(spec_steps, 3e-3), device="cpu", overwrite=True, progress=False)
    info = dict(mb_per_domain=mb, shape=SHAPE, vocab_size=2048, batch_size=batch_size, seq_len=128, generalist_steps=gen_steps, generalist_lr=2e-3,
                specialist_steps=spec_steps, specialist_lr=3e-3, generalist_wall_s=t1 - t0, specialists_wall_s=time.time() - t1,
                generalist_best_val_loss=rg["best_val_loss"])
    (out / "train_info.json").write_text(json.dumps(info, indent=2))
    return info


def timed(f, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def parallel(project: Path, prompts: dict, reps: int, max_new_tokens: int = 64) -> dict:
    "Four independent subtasks over two specialists (math, business), sampled with a seed: workers 2 vs 1 vs one call per subtask."
    specs, gen = specialists_from_project(project, separate=True)
    qs = [("math", prompts["math"][0]), ("business", prompts["business"][0]), ("math", prompts["math"][1]), ("business", prompts["business"][1])]
    plan = Plan("bench", [Subtask(str(i + 1), q) for i, (_, q) in enumerate(qs)], "rules")
    routes = [Route(str(i + 1), d, {}, 1.0, "fixed") for i, (d, _) in enumerate(qs)]
    run = lambda w: execute(plan, routes, specs, workers=w, max_new_tokens=max_new_tokens, temperature=0.8, seed=0)
    run(2)                                                      # warm-up
    par, ser = timed(lambda: run(2), reps), timed(lambda: run(1), reps)
    one = timed(lambda: [specs[d].complete([q], max_new_tokens, 0.8, 0) for d, q in qs], reps)
    a, b = run(1), run(2)
    toks = [a[i].tokens for i in a]
    return {"subtasks": 4, "specialists": ["math", "business"], "max_new_tokens": max_new_tokens, "parallel_workers2_s": par,
            "serial_workers1_s": ser, "one_call_per_subtask_s": one, "ratio_parallel_vs_serial": par / ser,
            "ratio_parallel_vs_one_call_each": par / one, "same_outputs": [a[i].text for i in a] == [b[i].text for i in b], "answer_tokens": toks}


def overhead(project: Path, prompts: dict, n: int, max_new_tokens: int = 64) -> dict:
    "(plan + route) / generation time of full runs on composed requests, answers of up to 64 tokens sampled (temperature 0.8, seed 0)."
    specs, gen = specialists_from_project(project, separate=True)
    o = Orchestrator(specs, gen, workers=2)
    rows = []
    for req, parts, ds in composed_requests(prompts, n, seed=7):
        tr = o.run(req, max_new_tokens, temperature=0.8, seed=0)
        t = tr["timings"]; rows.append({"parts": len(parts), "tokens": [p["tokens"] for p in tr["parts"]], **{k: t[k] for k in ("plan_s", "route_s", "execute_s")}})
    pr, ex = sum(r["plan_s"] + r["route_s"] for r in rows), sum(r["execute_s"] for r in rows)
    return {"requests": n, "max_new_tokens": max_new_tokens, "plan_s": sum(r["plan_s"] for r in rows), "route_s": sum(r["route_s"] for r in rows),
            "execute_s": ex, "overhead_fraction": pr / ex, "mean_answer_tokens": statistics.mean(x for r in rows for x in r["tokens"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", default=None); ap.add_argument("--train", action="store_true"); ap.add_argument("--out", default=None)
    ap.add_argument("--mb", type=float, default=0.3); ap.add_argument("--gen_steps", type=int, default=120); ap.add_argument("--spec_steps", type=int, default=260)
    ap.add_argument("--batch_size", type=int, default=8); ap.add_argument("--n", type=int, default=40); ap.add_argument("--composed", type=int, default=40)
    ap.add_argument("--gsm8k", type=int, default=10); ap.add_argument("--reps", type=int, default=3); ap.add_argument("--overhead_requests", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    R = {"machine": machine(), "loadavg_start": os.getloadavg(), "settings": vars(a)}
    project = Path(a.out if a.train else a.project or sys.exit("give --project DIR or --train --out DIR"))
    R["project"] = train(project, a.mb, a.gen_steps, a.spec_steps, a.batch_size) if a.train else json.loads((project / "train_info.json").read_text())
    t0 = time.perf_counter()
    R["eval"] = orchestrate_eval(project, n=a.n, composed=a.composed, min_tokens=30, gsm8k=a.gsm8k)
    R["eval_s"] = time.perf_counter() - t0
    items = heldout_prompts(None, a.n, seen=corpus_text(project / "data"))
    prompts = {d: [p for p, _ in v] for d, v in items.items()}
    R["parallel"] = parallel(project, prompts, a.reps)
    R["overhead"] = overhead(project, prompts, a.overhead_requests)
    R["loadavg_end"] = os.getloadavg()
    e, p, o = R["eval"], R["parallel"], R["overhead"]
    for r in ("likelihood", "classifier"):
        print(r, {d: round(v["accuracy"], 3) for d, v in e[r]["single"]["per_domain"].items()}, "composed parts", round(e[r]["composed"]["part_routing"]["accuracy"], 3))
    print("parallel/serial", round(p["ratio_parallel_vs_serial"], 3), "overhead", round(o["overhead_fraction"], 4))
    write("orchestrator", R)


if __name__ == "__main__":
    main()
