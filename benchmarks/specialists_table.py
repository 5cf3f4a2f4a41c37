"""One table for every way the kit combines specialists (issue 12's benchmark), on the real corpora.

Models, all from one generalist (seed000 shape, BPE 8192, trained on general text until its validation loss
flattens): a full fine-tune per specialist domain (`sma_train_generalist --init_from`); the router over the
generalist + the four fine-tunes (`sma_train_router`, heads only); one dense fine-tune on the mixture of all five
domains; the shiftable model (`sma_train_specialists`: attention / ffn site, copy / lora branches), soft and top-1.
Every model is scored on the same held-out tail of every domain (`sma_eval_lm`), on GSM8K and PubMedQA
(`sma_evaluate`), and for greedy decoding speed (batch 1, one process, interleaved).

Each job runs the kit's own command in a subprocess and leaves a marker `table/<job>.json` in --out; a job whose
marker exists is skipped, so a rerun resumes (an interrupted training continues with --resume). Jobs run in the
order below (= priority), `--parallel` at a time, each as soon as the jobs it needs are done. After every job the
results are gathered into benchmarks/results/specialists_table.{json,md}.

    python benchmarks/specialists_table.py --out RUN_DIR     # RUN_DIR holds data/ (see shiftable_eval.stage) and general/
"""
import argparse, json, math, os, signal, subprocess, sys, time
from pathlib import Path
from common import machine, write, RESULTS
from sma_kit.checkpoint import atomic_write, read_safetensors_header

SPECS = ["math", "medical", "datascience", "business"]
DOMAINS = ["general", *SPECS]
SHIFTS = [("attention", "copy"), ("ffn", "lora"), ("attention", "lora"), ("ffn", "copy")]
CLI = {"train": "sma_kit.cli:train_generalist", "shift": "sma_kit.cli:train_specialists", "eval": "sma_kit.cli:eval_lm",
       "router": "sma_kit.torch.router_train:train_router_cli", "qa": "sma_kit.qa_eval:evaluate_cli"}
PROMPT = "The Committee judged that the economy"
ROUTER = dict(epochs=10, batch=8, lr=1e-3, head=256, objective="marginal", entropy=0.01)   # the router stage: the first table run's settings, 10 epochs instead of 150 steps (2/3 of one)
BIN: Path = None   # where the launchers go (set by main)


def cli(name, *args):
    "A kit console script as a command line, through a launcher file like the one pip writes (works without the entry point installed)."
    mod, fn = CLI[name].split(":")
    f = BIN / f"{name}.py"
    if not f.is_file(): BIN.mkdir(parents=True, exist_ok=True); f.write_text(f"import sys\nfrom {mod} import {fn}\nsys.exit({fn}())\n")
    return [sys.executable, f, *map(str, args)]


def train_flags(out: Path, steps, lr, eval_every, patience=None):
    "Shared training flags; an interrupted run resumes, a stale one is replaced."
    f = ["--batch_size", 16, "--seq_len", 128, "--max_steps", steps, "--lr", lr, "--warmup_steps", min(30, steps // 10),
         "--eval_every", eval_every, "--seed", 1337, "--device", "cpu", "--quiet"]
    f += ["--patience", patience] if patience else []
    return f + (["--resume"] if (out / "train_state").is_dir() else ["--overwrite"] if out.exists() else [])


def jobs(a, w: Path) -> list[dict]:
    "Every job in priority order: name, command, the jobs it needs."
    J = []
    def add(name, cmd, needs=()): J.append({"name": name, "cmd": cmd, "needs": list(needs)})
    def evals(model, needs, routing=None):   # held-out perplexity now, the QA accuracies after every perplexity of the stage
        d = w / (needs[0] if needs else model)
        add(f"eval_{model}", cli("eval", "--model_dir", d, "--data_dir", w / "data", "--val_fraction", a.eval_fraction, "--json",
                                 w / "table" / f"eval_{model}.json", *(["--routing", "topk", "--route_k", 1] if routing == "top1" else [])), needs)
        if routing != "top1": qa.append((model, d, needs))
    def qas():
        for model, d, needs in qa:
            add(f"qa_{model}", cli("qa", "--model_dirs", d, "--datasets", "gsm8k,pubmedqa", "--sample_size", a.qa_n, "--gsm8k_shots", 0,
                                   "--max_new_tokens", 128, "--output_dir", w / "qa" / model, "--no_plots", "--quiet", "--device", "cpu",
                                   *(["--only_ensemble"] if model == "router" else [])), needs)
        qa.clear()
    qa = []
    for d in SPECS:   # 1. per-domain full fine-tunes
        add(f"ft_{d}", cli("train", "--data_dir", w / "data" / d, "--output_dir", w / f"ft_{d}", "--init_from", w / "general",
                           *train_flags(w / f"ft_{d}", a.ft_steps, a.ft_lr, 50, 3)))
    # 2. the router over the generalist + the fine-tunes, on each domain's training split (balanced by sma_kit.router_data)
    #    the members run once over every example (cached features, `sma_kit.torch.router_features`), then the heads train for
    #    --router_epochs on the cache, validated once per epoch; the cache is removed when the stage ends (kept for a resume)
    epoch = math.ceil(len(DOMAINS) * (a.router_per_dataset - round(a.router_per_dataset * 0.1)) / a.router_batch)
    add("router", cli("router", "--models", ",".join(str(w / m) for m in ["general", *(f"ft_{d}" for d in SPECS)]),
                      "--datasets", ",".join(str(w / "router_data" / d) for d in DOMAINS), "--output_dir", w / "router",
                      "--num_epochs", a.router_epochs, "--batch_size", a.router_batch, "--learning_rate", a.router_lr, "--warmup_steps", 50,
                      "--max_length", 128, "--max_per_dataset", a.router_per_dataset, "--eval_every", epoch, "--patience", 3,
                      "--objective", a.router_objective, "--entropy_weight", a.router_entropy, "--head_hidden_dim", a.router_head,
                      "--device", "cpu", "--quiet",
                      *(["--resume"] if (w / "router" / "train_state").is_dir() else ["--overwrite"] if (w / "router").exists() else [])),
        [f"ft_{d}" for d in SPECS])
    # 3. evaluation of everything trained so far
    for m in ["general", *(f"ft_{d}" for d in SPECS), "router"]: evals(m, [m] if m != "general" else [])   # the generalist is given
    qas()
    # 4. one dense fine-tune on the mixture of all five domains (library: the CLI trains on one domain)
    add("dense", [sys.executable, __file__, "--out", w, "--dense", str(a.mix_steps), "--ft_lr", str(a.ft_lr)])
    evals("dense", ["dense"]); qas()
    # 5. the shiftable model at each site and branch, same step budget
    for site, branch in SHIFTS:
        s = f"shift_{site}_{branch}"
        add(s, cli("shift", "--generalist_ckpt", w / "general", "--output_dir", w / s, "--data_dir", w / "data", "--expert_site", site,
                   "--branch", branch, *train_flags(w / s, a.mix_steps, a.shift_lr, a.mix_steps)))
        evals(s, [s]); evals(f"{s}_top1", [s], "top1"); qas()
    add("speed", [sys.executable, __file__, "--out", w, "--speed"])
    return J


def run(J, w: Path, parallel: int, only=None):
    "Run the jobs without a marker, `parallel` at a time, in priority order once their needs are done; gather after each."
    (w / "table").mkdir(exist_ok=True); (w / "logs").mkdir(exist_ok=True)
    done = lambda n: (w / "table" / f"{n}.json").is_file()
    todo = [j for j in J if not done(j["name"]) and (not only or any(j["name"].startswith(o) for o in only))]
    running, failed = {}, set()
    try:
        while todo or running:
            for j in list(todo):
                if len(running) >= parallel: break
                if done(j["name"]): todo.remove(j); continue   # finished meanwhile by another invocation
                if any(n in failed for n in j["needs"]): todo.remove(j); failed.add(j["name"]); print(f"skip {j['name']} (a need failed)"); continue
                if all(done(n) for n in j["needs"]) and (j["name"] != "speed" or not running):
                    log = open(w / "logs" / f"{j['name']}.log", "a")   # own session: Ctrl-C reaches the driver, which forwards it once
                    p = subprocess.Popen([str(c) for c in j["cmd"]], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "OMP_NUM_THREADS": "1"})
                    running[j["name"]] = (p, time.time(), j); todo.remove(j); print(f"{time.strftime('%H:%M:%S')} start {j['name']}", flush=True)
            if todo and not running and not any(all(done(n) for n in j["needs"]) for j in todo):
                print("nothing runnable:", ", ".join(j["name"] for j in todo)); break
            time.sleep(5)
            for n, (p, t0, j) in list(running.items()):
                if p.poll() is None: continue
                del running[n]
                wall = time.time() - t0
                print(f"{time.strftime('%H:%M:%S')} {'done' if p.returncode == 0 else f'FAILED ({p.returncode})'} {n} {wall:.0f}s", flush=True)
                if p.returncode != 0: failed.add(n); continue
                marker = w / "table" / f"{n}.json"
                if not marker.is_file(): atomic_write(marker, json.dumps({"wall_s": wall, "cmd": [str(c) for c in j["cmd"][2:]]}) + "\n")
                gather(w)
    except KeyboardInterrupt:   # each running job saves its state (trainings resume on the next run)
        for p, _, _ in running.values(): p.send_signal(signal.SIGINT)
        for p, _, _ in running.values(): p.wait()
        print(f"interrupted: {', '.join(running) or 'no job'} stopped; rerun the same command to resume", file=sys.stderr); sys.exit(130)


def router_data(w: Path) -> Path:
    """The router's datasets: each domain's TRAINING split only (the generalist's tokens before the 10% held-out tail,
    decoded back to text), so the heads never see the text every model is evaluated on."""
    from sma_kit.data import discover_domains, load_corpus_streams
    from sma_kit.torch.train import load_model
    out = w / "router_data"
    if (out / ".done").is_file(): return out
    _, tok = load_model(w / "general", "cpu")
    train, _ = load_corpus_streams(discover_domains(w / "data"), tok, 0.1)
    for d, ids in train.items():
        (out / d).mkdir(parents=True, exist_ok=True)
        atomic_write(out / d / "train.txt", tok.decode([int(i) for i in ids]))
    (out / ".done").write_text("")
    return out


def dense(w: Path, steps: int, lr: float):
    "The dense fine-tune: every weight of the generalist trains on all five domains, equal shares (the kit's Trainer)."
    from sma_kit.config import TrainConfig
    from sma_kit.data import discover_domains, load_corpus_streams, MixtureSampler
    from sma_kit.torch.train import load_model, Trainer
    model, tok = load_model(w / "general", "cpu")
    for p in model.parameters(): p.requires_grad_(True)
    tc = TrainConfig(batch_size=16, seq_len=128, max_steps=steps, lr=lr, warmup_steps=min(30, steps // 10), eval_every=steps, seed=1337)
    train, val = load_corpus_streams(discover_domains(w / "data"), tok, 0.1, tc.seq_len)
    res = Trainer(model.train(), tok, MixtureSampler(train, tc.seq_len, {d: 1.0 for d in train}, seed=tc.seed), val, tc,
                  w / "dense", "cpu", progress=False).fit(resume=(w / "dense" / "train_state").is_dir())
    print(json.dumps({k: v for k, v in res.items() if isinstance(v, (int, float, str))}))
    if res["interrupted"]: sys.exit(130)   # no marker: the next run resumes it


def speed(w: Path, n_new=64, rounds=2):
    "Greedy decoding tokens/s, batch 1, the same prompt, every model in this process, interleaved rounds (best of the rounds)."
    import torch
    from sma_kit.generate import load_lm
    torch.set_num_threads(1)
    names = ["general", *(m for m in ["ft_math", "dense", "router", *(f"shift_{s}_{b}" for s, b in SHIFTS)] if (w / "table" / f"{m}.json").is_file())]
    lms = {m: load_lm(w / m, "cpu", name=m) for m in names}
    lms.update({f"{m}_top1": lms[m].with_routing("topk", 1) for m in names if m.startswith("shift")})
    best, load = {m: 0.0 for m in lms}, [os.getloadavg()[0]]
    for m, lm in lms.items(): lm.complete([PROMPT], 8, temperature=0.0)   # warm-up
    for _ in range(rounds):
        for m, lm in lms.items():
            t = time.perf_counter(); c = lm.complete([PROMPT], n_new, temperature=0.0)[0]; dt = time.perf_counter() - t
            best[m] = max(best[m], len(c.ids) / dt)
        load.append(os.getloadavg()[0])
    atomic_write(w / "table" / "speed.json", json.dumps({"tokens_per_s": best, "new_tokens": n_new, "rounds": rounds, "prompt": PROMPT,
                                                          "torch_threads": 1, "load_avg_1min": load}, indent=1) + "\n")


def _json(p: Path):
    return json.loads(p.read_text()) if p.is_file() else None


def n_params(path: Path) -> int:
    return sum(math.prod(v["shape"]) for k, v in read_safetensors_header(path).items() if k != "__metadata__")


def train_s(d: Path) -> float:
    "The trainer's own clock (loading and tokenizing excluded; kept across a resume): the last `elapsed_s` in metrics.jsonl."
    recs = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if '"elapsed_s"' in l]
    return recs[-1]["elapsed_s"] if recs else float("nan")


def shift_sizes(d: Path) -> dict:
    "Total, trainable (branches + gates) and active-per-token (top-1: base + one branch + gates) parameters of a shiftable model."
    hdr = {k: math.prod(v["shape"]) for k, v in read_safetensors_header(d / "model.safetensors").items() if k != "__metadata__"}
    branch = {s: sum(v for k, v in hdr.items() if f"_experts.{s}." in k) for s in SPECS}
    new = sum(branch.values()) + sum(v for k, v in hdr.items() if ".gate." in k and "_experts." not in k)
    total = sum(hdr.values())
    return {"total": total, "trainable": new, "active_soft": total, "active_top1": total - sum(branch.values()) + max(branch.values())}


def gather(w: Path):
    "Every finished job's figures -> benchmarks/results/specialists_table.{json,md}."
    r = _json(w / "table" / "eval_router.json")
    def T(n):   # a member's own perplexity comes with the router's evaluation when its single evaluation has not run
        x = _json(w / "table" / f"{n}.json")
        m = n.removeprefix("eval_")
        if x is None and n.startswith("eval_") and r and m in r.get("members", []) and "members" in next(iter(r["domains"].values())):
            x = {"domains": {d: v["members"][m] for d, v in r["domains"].items()}}
        return x
    gen = {d: v["perplexity"] for d, v in (T("eval_general") or {}).get("domains", {}).items()}
    rows, ft_s = {}, {d: train_s(w / f"ft_{d}") for d in SPECS if T(f"ft_{d}")}
    def row(label, model, ev, total, trainable, active, secs, qa_label=None):
        if ev is None: return
        ppl = {d: v["perplexity"] for d, v in ev["domains"].items()} if "domains" in ev else ev
        qa = _json(w / "qa" / model / "results.json") if qa_label else None
        acc = {ds: r[qa_label]["accuracy"] for ds, r in qa["results"].items() if qa_label in r} if qa else {}
        rows[label] = {"model": model, "ppl": ppl, "params": total, "trainable": trainable, "active_per_token": active, "train_s": secs, "accuracy": acc}
    P = lambda m: n_params(w / m / "model.safetensors")
    if gen: row("generalist", "general", T("eval_general"), P("general"), P("general"), P("general"), train_s(w / "general"), "general")
    for d in SPECS:
        if T(f"ft_{d}"): row(f"fine-tune {d}", f"ft_{d}", T(f"eval_ft_{d}"), P(f"ft_{d}"), P(f"ft_{d}"), P(f"ft_{d}"), ft_s[d], f"ft_{d}")
    if gen and all(f"fine-tune {d}" in rows for d in SPECS):   # picking the right fine-tune per text (the oracle of a per-text choice)
        own = {"general": gen["general"], **{d: rows[f"fine-tune {d}"]["ppl"][d] for d in SPECS}}
        tot = P("general") + sum(rows[f"fine-tune {d}"]["params"] for d in SPECS)
        row("own-domain fine-tune per text (oracle pick)", "", own, tot, tot - P("general"), P("general"), sum(ft_s.values()))
    if r:
        heads = n_params(w / "router" / "router.safetensors")
        feat_s = (_json(w / "router" / "router.json") or {}).get("features_s", 0.0)   # the members' feature pass, outside the trainer's clock
        tot, secs = P("general") + sum(P(f"ft_{d}") for d in SPECS) + heads, sum(ft_s.values()) + train_s(w / "router") + feat_s
        row("router: mixture", "router", {d: v["perplexity"] for d, v in r["domains"].items()}, tot, heads, tot, secs, "router")
        row("router: selected member", "router", {d: v["select_perplexity"] for d, v in r["domains"].items()}, tot, heads, tot, secs)
    if T("dense"): row("dense fine-tune on the mixture", "dense", T("eval_dense"), P("dense"), P("dense"), P("dense"), train_s(w / "dense"), "dense")
    for s, b in SHIFTS:
        m = f"shift_{s}_{b}"
        if not T(m): continue
        z = shift_sizes(w / m)
        row(f"shiftable {s}/{b}, soft", m, T(f"eval_{m}"), z["total"], z["trainable"], z["active_soft"], train_s(w / m), m)
        row(f"shiftable {s}/{b}, top-1", m, T(f"eval_{m}_top1"), z["total"], z["trainable"], z["active_top1"], train_s(w / m))
    sp = T("speed") or {}
    for label, x in rows.items():
        key = x["model"] + ("_top1" if "top-1" in label else "")
        x["decode_tokens_per_s"] = sp.get("tokens_per_s", {}).get(key)
        if gen:   # mean log-perplexity gain over the generalist on the four specialist domains, per M parameters and per training minute
            x["mean_log_gain"] = sum(math.log(gen[d] / x["ppl"][d]) for d in SPECS) / len(SPECS)
            x["gain_per_M_params"] = x["mean_log_gain"] / (x["params"] / 1e6)
            x["gain_per_train_min"] = x["mean_log_gain"] / (x["train_s"] / 60) if x["train_s"] else None
    R = {"machine": machine(), "commit": subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                                                        capture_output=True, text=True).stdout.strip(),
         "load_avg": os.getloadavg(), "run_dir": w.name, "generalist_curve": curve(w / "general"), "rows": rows,
         "finetune_curves": {d: curve(w / f"ft_{d}") for d in SPECS if (w / f"ft_{d}" / "metrics.jsonl").is_file()},
         "router_shares": {d: v["share"] for d, v in r["domains"].items()} if r else None, "speed": sp or None,
         "qa": qa_info(w), "targets": targets(rows, r, gen), "jobs": {p.stem: {**x, "cmd": [c.replace(str(w), "RUN_DIR") for c in x["cmd"]]}
                                        for p in sorted((w / "table").glob("*.json")) if "wall_s" in (x := _json(p))}}
    write("specialists_table", R)
    atomic_write(RESULTS / "specialists_table.md", markdown(R) + "\n")


def curve(d: Path) -> list:
    return [(x["step"], round(x["val_loss"], 4)) for x in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "val_loss" in x]


def qa_info(w: Path) -> dict:
    "Items, chance and majority baselines of each QA dataset (the same sample for every model)."
    qa = next((q for p in sorted((w / "qa").glob("*/results.json")) if (q := _json(p))), None) if (w / "qa").is_dir() else None
    if not qa: return {}
    out = {ds: {k: v for k, v in info.items() if k in ("n", "chance", "majority", "majority_label", "shots")} for ds, info in qa["datasets"].items()}
    if "gsm8k" in out:   # free-form numbers: "chance" is answering the most common target of the sample every time
        from collections import Counter
        from sma_kit.qa_eval import read_gsm8k, sample_items
        t = [x["target"] for x in sample_items(read_gsm8k("test", qa["config"]["data_dir"]), qa["config"]["sample_size"], qa["config"]["seed"])]
        out["gsm8k"].update(chance=0.0, majority=Counter(t).most_common(1)[0][1] / len(t))
    return out


def targets(rows: dict, r, gen: dict) -> dict:
    "The issue's targets, met or not, with the numbers."
    out = {}
    if r and "members" in next(iter(r["domains"].values())):
        out["router_within_1pct_of_best_member"] = {d: {"mixture": v["perplexity"], "best_member": min(m["perplexity"] for m in v["members"].values()),
                                                        "met": v["perplexity"] <= 1.01 * min(m["perplexity"] for m in v["members"].values())} for d, v in r["domains"].items()}
        own = lambda d: "general" if d == "general" else f"ft_{d}"
        out["own_member_share_ge_80pct"] = {d: {"share": v["share"].get(own(d)), "met": (v["share"].get(own(d)) or 0) >= 0.8} for d, v in r["domains"].items()}
    ft = rows.get("own-domain fine-tune per text (oracle pick)")
    if gen and ft:
        ratio = lambda x, d: math.log(gen[d] / x["ppl"][d]) / math.log(gen[d] / ft["ppl"][d])
        sh = {k: {d: ratio(x, d) for d in SPECS} for k, x in rows.items() if k.startswith("shiftable")}
        if sh:
            best = max(sh, key=lambda k: min(sh[k].values()))
            out["shiftable_ge_80pct_of_finetune_log_gain"] = {"all": sh, "best": best, "met": min(sh[best].values()) >= 0.8}
    if gen:
        cand = {k: x for k, x in rows.items() if k != "generalist" and "selected" not in k and not k.startswith("fine-tune ")}   # ways to serve every domain
        for key in ("gain_per_M_params", "gain_per_train_min"):
            ok = {k: x[key] for k, x in cand.items() if x.get(key) is not None}
            if ok: out[f"wins_{key}"] = max(ok, key=ok.get)
    return out


def markdown(R: dict) -> str:
    f = lambda v, p=1: "—" if v is None else f"{v:,.{p}f}"
    M = lambda n: f"{n / 1e6:.2f}"
    lines = ["| approach | " + " | ".join(DOMAINS) + " | params M: total / trainable / active per token | training min | decoding tokens/s | GSM8K | PubMedQA |",
             "|---|" + "---|" * (len(DOMAINS) + 5)]
    for k, x in R["rows"].items():
        acc = [f(x["accuracy"].get(ds), 3) if x["accuracy"].get(ds) is not None else "—" for ds in ("gsm8k", "pubmedqa")]
        lines.append(f"| {k} | " + " | ".join(f(x["ppl"].get(d)) for d in DOMAINS) + f" | {M(x['params'])} / {M(x['trainable'])} / {M(x['active_per_token'])} | "
                     f"{f(x['train_s'] / 60)} | {f(x.get('decode_tokens_per_s'), 0)} | " + " | ".join(acc) + " |")
    q = R["qa"]
    if q: lines += ["", "QA baselines: " + "; ".join(f"{ds} n={v['n']}: chance {f(v.get('chance'), 3)}, majority {f(v.get('majority'), 3)}" for ds, v in q.items())]
    if R["router_shares"]:
        names = list(next(iter(R["router_shares"].values())))
        lines += ["", "| router: share of a domain's tokens | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {d} | " + " | ".join(f"{s[n]:.3f}" for n in names) + " |" for d, s in R["router_shares"].items()]
    t = R["targets"]
    for k in ("router_within_1pct_of_best_member", "own_member_share_ge_80pct"):
        if k in t: lines.append(f"- {k}: " + ", ".join(f"{d} {'met' if v['met'] else 'NOT met'} ({v.get('share', v.get('mixture')):.3g}" + (f" vs {v['best_member']:.3g})" if "best_member" in v else ")") for d, v in t[k].items()))
    k = "shiftable_ge_80pct_of_finetune_log_gain"
    if k in t: lines.append(f"- {k}: best {t[k]['best']} " + ("met" if t[k]["met"] else "NOT met") + " (" + ", ".join(f"{d} {v:.2f}" for d, v in t[k]["all"][t[k]["best"]].items()) + ")")
    lines += [f"- {k}: {v}" for k, v in t.items() if k.startswith("wins_")]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the run dir: data/ and the trained generalist in general/")
    ap.add_argument("--parallel", type=int, default=2, help="jobs at once (each with one thread)")
    ap.add_argument("--ft_steps", type=int, default=300)
    ap.add_argument("--ft_lr", type=float, default=5e-4)
    ap.add_argument("--router_epochs", type=float, default=ROUTER["epochs"], help="passes of the router's heads over the cached member features")
    ap.add_argument("--router_batch", type=int, default=ROUTER["batch"])
    ap.add_argument("--router_lr", type=float, default=ROUTER["lr"])
    ap.add_argument("--router_head", type=int, default=ROUTER["head"], help="hidden width of each router head")
    ap.add_argument("--router_objective", default=ROUTER["objective"], choices=("marginal", "oracle", "both"))
    ap.add_argument("--router_entropy", type=float, default=ROUTER["entropy"], help="entropy weight of the router's loss")
    ap.add_argument("--router_per_dataset", type=int, default=400, help="examples per dataset after balancing (10%% of them validate)")
    ap.add_argument("--mix_steps", type=int, default=300, help="steps of the dense mixture fine-tune and of each shiftable model")
    ap.add_argument("--shift_lr", type=float, default=1e-3)
    ap.add_argument("--eval_fraction", type=float, default=0.1, help="score the last this fraction of each domain (<= 0.1: inside every run's held-out tail)")
    ap.add_argument("--qa_n", type=int, default=100, help="GSM8K test / PubMedQA test items (seeded sample)")
    ap.add_argument("--only", default=None, help="comma-separated job-name prefixes to run")
    ap.add_argument("--gather", action="store_true", help="only rebuild the results from the finished jobs")
    ap.add_argument("--dense", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--speed", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global BIN
    w = Path(a.out).resolve(); BIN = w / "bin"
    if a.dense: return dense(w, a.dense, a.ft_lr)
    if a.speed: return speed(w)
    if not a.gather and (w / "general" / "model.safetensors").is_file(): router_data(w)
    if not a.gather: run(jobs(a, w), w, a.parallel, a.only.split(",") if a.only else None)
    gather(w)


if __name__ == "__main__":
    main()
