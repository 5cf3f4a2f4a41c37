"""Orchestrator benchmark: routing accuracy, composed requests, parallel execution and orchestration overhead.

Models: a project trained from the real corpora (`--train --out DIR`, or `--project DIR`: the shiftable-eval staging of
`$SMA_DATA_DIR`, a generalist of d_model 128, 2 layers, 4 heads, SwiGLU 384, seq 128, BPE 2048, then the shiftable model with
one specialist per domain), or existing model folders (`--specialists general=DIR,math=DIR,... --train_data CORPORA`, e.g.
per-domain fine-tunes; `--speed_project DIR` then names the project timed by the speed parts, default: the same folders).
Held-out prompts: GSM8K test questions, PubMedQA questions, scikit-learn guide and FOMC statement passages that do not occur
in the training corpora.

Speed parts (`--parts parallel,overhead`): each local model in its own worker process with one torch thread (what
`sma_orchestrate --workers N>1` does), compared in the same run, repetitions interleaved, with one call at a time over the
same workers and with the models in this process. `--parts` runs some parts and keeps the others' results from the existing
results file.

    SMA_DATA_DIR=../shared/data python benchmarks/orchestrator_bench.py --train --out /tmp/orch_proj
    SMA_DATA_DIR=../shared/data python benchmarks/orchestrator_bench.py --project /tmp/orch_proj --parts parallel,overhead
    SMA_DATA_DIR=../shared/data python benchmarks/orchestrator_bench.py --specialists general=G,math=M,... --train_data D --parts eval
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path
import torch
from common import machine, data_dir, write, RESULTS

from sma_kit.config import TrainConfig
from sma_kit.backend import load_backend
from sma_kit.orchestrator_plan import Subtask, Route, Plan, _SCORES, LikelihoodRouter, CascadeRouter
from sma_kit.orchestrator_workers import specialists_from_project, parse_specialists, load_specialist, ready_all, close_all
from sma_kit.orchestrator import Orchestrator, execute
from sma_kit.orchestrator_eval import (orchestrate_eval, heldout_prompts, composed_requests, corpus_text, fit_windows, eval_specialists,
                                      routing_eval, composed_eval, overlap_report, acc)

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


def load(project, specialists, processes: bool) -> dict:
    "The specialists of a project or of named folders, in worker processes or in this process."
    if project: return specialists_from_project(project, processes=processes)[0]
    return ready_all({n: load_specialist(n, w, process=processes) for n, w in parse_specialists(specialists).items()})


def interleaved(fns: dict, reps: int) -> dict:
    "Median seconds of each function, the functions taking turns in every repetition."
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter(); f(); ts[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in ts.items()}


def parallel(workers: dict, here: dict, prompts: dict, reps: int, max_new_tokens: int = 64, pair=("math", "business")) -> dict:
    "Four independent subtasks over two specialists (`pair`, default math and business), sampled with a seed: workers 2 vs 1, and in this process."
    x, y = pair
    qs = [(x, prompts[x][0]), (y, prompts[y][0]), (x, prompts[x][1]), (y, prompts[y][1])]
    plan = Plan("bench", [Subtask(str(i + 1), q) for i, (_, q) in enumerate(qs)], "rules")
    routes = [Route(str(i + 1), d, {}, 1.0, "fixed") for i, (d, _) in enumerate(qs)]
    run = lambda specs, w: execute(plan, routes, specs, workers=w, max_new_tokens=max_new_tokens, temperature=0.8, seed=0)
    cores, cpu = {1: [], 2: []}, {1: [], 2: []}
    def timed_run(w):
        "One run over the workers; the CPU seconds the two workers used over the wall time from the first start to the last end."
        run(workers, w)
        (a0, a1, ca), (b0, b1, cb) = workers[x].span, workers[y].span
        cores[w].append((ca + cb) / (max(a1, b1) - min(a0, b0))); cpu[w].append((ca, cb))
    run(workers, 2); run(here, 1)                                                 # warm-up
    t = interleaved({"parallel": lambda: timed_run(2), "serial": lambda: timed_run(1), "in_process": lambda: run(here, 1),
                     "one_call_each": lambda: [here[d].complete([q], max_new_tokens, 0.8, 0) for d, q in qs]}, reps)
    a, b, c = run(workers, 1), run(workers, 2), run(here, 1)
    texts = lambda o: [o[i].text for i in sorted(o)]
    return {"subtasks": 4, "specialists": list(pair), "max_new_tokens": max_new_tokens, "reps": reps,
            "parallel_workers2_s": t["parallel"], "serial_workers1_s": t["serial"], "in_process_workers1_s": t["in_process"],
            "in_process_one_call_per_subtask_s": t["one_call_each"], "ratio_parallel_vs_serial": t["parallel"] / t["serial"],
            "ratio_parallel_vs_in_process": t["parallel"] / t["in_process"], "ratio_parallel_vs_one_call_each": t["parallel"] / t["one_call_each"],
            "cores_used_parallel": statistics.median(cores[2]), "cores_used_serial": statistics.median(cores[1]),
            # load-robust: the busier worker's CPU seconds in a parallel run over both workers' CPU seconds in a serial run, i.e. the
            # ratio when each worker has a core of its own (start-up, pipes and the parent's thread not counted)
            "worker_cpu_s_parallel": [list(c) for c in cpu[2]], "worker_cpu_s_serial": [list(c) for c in cpu[1]],
            "ratio_cpu_critical_path": statistics.median(max(c) for c in cpu[2]) / statistics.median(sum(c) for c in cpu[1]),
            "same_outputs": texts(a) == texts(b) == texts(c), "answer_tokens": [a[i].tokens for i in sorted(a)]}


def overhead(workers: dict, prompts: dict, n: int, classifier=None, max_new_tokens: int = 64, cascade: float = 0.95) -> dict:
    "(plan + route) / generation time of full runs on composed requests (workers 2), answers of 64 tokens sampled; no score known beforehand."
    res = {}
    for name, kw in (("likelihood", {}), ("bag", {"router": "classifier", "classifier": classifier}),
                     ("cascade", {"router": "cascade", "classifier": classifier, "cascade": cascade})):
        if name != "likelihood" and classifier is None: continue
        o, rows = Orchestrator(workers, "general", workers=2, **kw), []
        for req, parts, ds in composed_requests(prompts, n, seed=7):
            _SCORES.clear()                                                      # a new request: nothing scored before
            tr = o.run(req, max_new_tokens, temperature=0.8, seed=0)
            t = tr["timings"]; rows.append({"parts": len(parts), "tokens": [p["tokens"] for p in tr["parts"]], **{k: t[k] for k in ("plan_s", "route_s", "execute_s")}})
        pr, ex = sum(r["plan_s"] + r["route_s"] for r in rows), sum(r["execute_s"] for r in rows)
        res[name] = {"requests": n, "parts": sum(r["parts"] for r in rows), "max_new_tokens": max_new_tokens, "plan_s": sum(r["plan_s"] for r in rows),
                     "route_s": sum(r["route_s"] for r in rows), "execute_s": ex, "overhead_fraction": pr / ex,
                     "mean_answer_tokens": statistics.mean(x for r in rows for x in r["tokens"]), "rows": rows}
        if name == "cascade": res[name]["escalated"] = {"parts": o.router.escalated, "of": o.router.seen, "threshold": cascade}
    return res


def sweep(bag, lik, prompts: dict, gen: str, thresholds=(0.5, 0.7, 0.8, 0.9, 0.95, 0.99)) -> dict:
    "Accuracy (all single-domain prompts) and escalated share of the cascade at each threshold (the likelihood scores are kept: cheap)."
    texts, gold = [p for v in prompts.values() for p in v], [d for d, v in prompts.items() for _ in v]
    first, second = bag.propose(texts), lik.propose(texts)
    out = {}
    for t in thresholds:
        pick = [b if b[2] >= t else l for b, l in zip(first, second)]
        out[str(t)] = {**acc([int(p[0] == d and p[2] >= 0.5) for p, d in zip(pick, gold)]), "escalated": sum(b[2] < t for b in first) / len(texts)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", default=None); ap.add_argument("--train", action="store_true"); ap.add_argument("--out", default=None)
    ap.add_argument("--specialists", default=None); ap.add_argument("--train_data", default=None); ap.add_argument("--speed_project", default=None)
    ap.add_argument("--parts", default="eval,parallel,overhead")
    ap.add_argument("--mb", type=float, default=0.3); ap.add_argument("--gen_steps", type=int, default=120); ap.add_argument("--spec_steps", type=int, default=260)
    ap.add_argument("--batch_size", type=int, default=8); ap.add_argument("--n", type=int, default=40); ap.add_argument("--composed", type=int, default=40)
    ap.add_argument("--gsm8k", type=int, default=10); ap.add_argument("--reps", type=int, default=5); ap.add_argument("--overhead_requests", type=int, default=8)
    ap.add_argument("--windows", type=int, default=400); ap.add_argument("--cascade", type=float, default=0.95)
    ap.add_argument("--pair", default="math,business", help="the two specialists of the parallel part")
    ap.add_argument("--min_prompts", type=int, default=20, help="routes: a domain with fewer held-out prompts is reported untestable")
    a = ap.parse_args()
    torch.set_num_threads(1)
    parts = set(a.parts.split(","))
    old = RESULTS / "orchestrator.json"
    R = json.loads(old.read_text()) if old.is_file() and not parts >= {"eval", "parallel", "overhead"} else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    ag = Path("/proc/self/autogroup")
    stamp = {"machine": machine(), "commit": commit, "loadavg_start": os.getloadavg(), "settings": vars(a),
             "autogroup": ag.read_text().strip() if ag.is_file() else None}      # e.g. "/autogroup-12 nice -10": the run's raised priority
    project = a.out if a.train else a.project
    if not (project or a.specialists): sys.exit("give --project DIR, --train --out DIR or --specialists name=DIR,...")
    if "eval" in parts:
        if a.train: R["project"] = train(Path(project), a.mb, a.gen_steps, a.spec_steps, a.batch_size)
        elif project: R["project"] = json.loads((Path(project) / "train_info.json").read_text())
        else: R["project"] = {"specialists": parse_specialists(a.specialists), "train_data": a.train_data}
        t0 = time.perf_counter()
        R["eval"] = orchestrate_eval(project, n=a.n, composed=a.composed, min_tokens=30, gsm8k=a.gsm8k, routers="likelihood,classifier,bag",
                                     windows=a.windows, specialists=None if project else a.specialists, train_data=a.train_data)
        R["eval_s"], R["eval_run"] = time.perf_counter() - t0, {**stamp, "loadavg_end": os.getloadavg()}
    if "routes" in parts:                       # routing accuracy only (no perplexity, no GSM8K): the quick check of named model folders
        specs, gen, data = eval_specialists(project, None if project else a.specialists, a.train_data)
        items = heldout_prompts(None, a.n, seen=corpus_text(data))
        prompts = {d: [p for p, _ in v if specs[gen].n_tokens(p) >= 30] for d, v in items.items() if d in specs}
        few = {d: len(v) for d, v in prompts.items() if len(v) < a.min_prompts}     # too few held-out prompts of 30+ tokens: not testable
        prompts = {d: v for d, v in prompts.items() if d not in few}
        t0 = time.perf_counter(); bag = fit_windows(specs, gen, data, a.windows, bag=True, ll=False); fit_s = time.perf_counter() - t0
        routers = {"likelihood": LikelihoodRouter(specs, gen), "bag": bag, "cascade": CascadeRouter(bag, LikelihoodRouter(specs, gen), a.cascade)}
        R["routes"] = {"models": a.specialists or project, "prompts_per_domain": {d: len(v) for d, v in prompts.items()}, "untestable": few, **stamp,
                       "overlap_8gram": overlap_report(prompts, corpus_text(data)), "bag_fit_s": fit_s, "bag_temperature": bag.temperature,
                       **{k: {"single": routing_eval(r, prompts, gen, list(specs)), "composed": composed_eval(r, composed_requests(prompts, a.composed), gen)}
                          for k, r in routers.items()}, "loadavg_end": os.getloadavg()}
        R["routes"]["cascade"]["escalated"] = {"texts": routers["cascade"].escalated, "of": routers["cascade"].seen, "threshold": a.cascade}
        R["routes"]["cascade_sweep"] = sweep(bag, routers["likelihood"], prompts, gen)
        for k in routers: print("routes", k, {d: round(v["accuracy"], 3) for d, v in R["routes"][k]["single"]["per_domain"].items()},
                                "composed parts", round(R["routes"][k]["composed"]["part_routing"]["accuracy"], 3))
    if parts & {"parallel", "overhead"}:
        sp = a.speed_project or project
        spec_arg = None if sp else a.specialists
        data = Path(a.train_data) if a.train_data and not sp else Path(sp) / "data"
        items = heldout_prompts(None, a.n, seen=corpus_text(data))
        prompts = {d: [p for p, _ in v] for d, v in items.items() if v}          # a domain with no held-out prompt is left out
        workers, here = load(sp, spec_arg, True), load(sp, spec_arg, False)
        try:
            run = {**stamp, "models": sp or a.specialists}
            if "parallel" in parts: R["parallel"] = {**parallel(workers, here, prompts, a.reps, pair=a.pair.split(",")), "run": {**run, "loadavg_end": os.getloadavg()}}
            if "parallel" in parts: print("parallel", {k: v for k, v in R["parallel"].items() if k != "run"}, flush=True)
            if "overhead" in parts:
                clf = fit_windows(workers, "general", data, a.windows, bag=True, ll=False)
                R["overhead"] = {**overhead(workers, prompts, a.overhead_requests, clf, cascade=a.cascade), "run": {**run, "loadavg_end": os.getloadavg()}}
        finally: close_all(workers)
    for r in ("likelihood", "classifier", "bag"):
        if "eval" in R and r in R["eval"]:
            e = R["eval"][r]
            print(r, {d: round(v["accuracy"], 3) for d, v in e["single"]["per_domain"].items()}, "composed parts", round(e["composed"]["part_routing"]["accuracy"], 3))
    if "parallel" in R: print("parallel/serial", round(R["parallel"]["ratio_parallel_vs_serial"], 3), "parallel/in-process",
                              round(R["parallel"]["ratio_parallel_vs_in_process"], 3), "cores used", R["parallel"].get("cores_used_parallel"))
    for k, v in R.get("overhead", {}).items():
        if k != "run": print("overhead", k, round(v["overhead_fraction"], 4))
    mine = {"eval": ("project", "eval", "eval_s", "eval_run"), "routes": ("routes",), "parallel": ("parallel",), "overhead": ("overhead",)}
    if old.is_file() and not parts >= {"eval", "parallel", "overhead"}:   # another run may have written meanwhile: keep its parts
        R = {**json.loads(old.read_text()), **{k: R[k] for p in parts for k in mine.get(p, ()) if k in R}}
    write("orchestrator", R)


if __name__ == "__main__":
    main()
