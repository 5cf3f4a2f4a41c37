"""Shiftable specialists on the real corpora: the evaluation of the shiftable-specialists issue.

Domains: general (WikiText-2 test + tinyshakespeare), math (GSM8K train), medical (PubMedQA contexts),
datascience (scikit-learn user guide), business (FOMC minutes). Model: the `seed000` shape (d_model 256,
8 heads, 4 layers, SwiGLU 1024, seq 128, BPE 8192). Measures, per domain, validation perplexity of:
the generalist; the shiftable model (soft and top-1 routing); the generalist fully fine-tuned on each
domain alone (upper bound); one dense model fine-tuned on the whole mixture. Plus general retention,
routing accuracy, trainable parameters, wall time of training / add / delete, and generation speed.

    SMA_DATA_DIR=../shared/data python benchmarks/shiftable_eval.py [--gen_steps 1200] [--spec_steps 600] [--ft_steps 300]
"""
import argparse, json, math, os, shutil, tempfile, time
from pathlib import Path
import torch
from common import machine, data_dir, write, RESULTS

from sma_kit.checkpoint import atomic_write
from sma_kit.config import TrainConfig, preset
from sma_kit.data import discover_domains, MixtureSampler
from sma_kit.torch.model import generate
from sma_kit.data import load_corpus_streams
from sma_kit.torch.train import (train_generalist, train_specialists, load_model, save_model, eval_domains,
                                 Trainer)
from sma_kit.torch.shift import routing_report
from sma_kit.manager import SpecialistManager, ProjectSettings

SPECS = ["business", "datascience", "math", "medical"]


def stage(src: Path, dst: Path, mb: float) -> Path:
    """A DATA root with about `mb` MB per domain, written to a scratch dir (never into the repo).

    general: tinyshakespeare + WikiText-2 test (raw); math: the first GSM8K train records; medical: the first
    PubMedQA-L records (question, contexts, long answer); datascience: the scikit-learn guide files in
    sorted order; business: the FOMC minutes in sorted (oldest first) order."""
    cap = int(mb * 1e6)
    def take(items, size):
        out, n = [], 0
        for it in items:
            if n >= cap: break
            out.append(it); n += size(it)
        return out
    for d in ("general", "math", "medical", "datascience", "business"): (dst / d).mkdir(parents=True, exist_ok=True)
    for rel, name in (("general/tinyshakespeare/input.txt", "tinyshakespeare.txt"), ("general/wikitext2_raw/wiki.test.raw", "wiki.test.txt")):
        (dst / "general" / name).write_bytes((src / rel).read_bytes()[: cap // 2])
    lines = (src / "math/gsm8k/train.jsonl").read_text().splitlines(keepends=True)
    (dst / "math/gsm8k_train.jsonl").write_text("".join(take(lines, len)))
    recs = json.loads((src / "medical/pubmedqa/ori_pqal.json").read_text())
    rows = [json.dumps({"text": "\n".join([r["QUESTION"], *r["CONTEXTS"], r["LONG_ANSWER"]])}) + "\n" for r in recs.values()]
    (dst / "medical/pubmedqa.jsonl").write_text("".join(take(rows, len)))
    for dom, folder in (("datascience", "datascience/sklearn_user_guide"), ("business", "business/fomc_minutes")):
        files = take(sorted(p for p in (src / folder).rglob("*") if p.suffix in (".rst", ".txt") and not p.name.startswith("LICENSE")), lambda p: p.stat().st_size)
        for f in files: (dst / dom / f.name).write_bytes(f.read_bytes())
    return dst


def ppl(ev): return {d: v["perplexity"] for d, v in ev.items()}


def finetune(base_dir, out, train, val, tc, device):
    "Full fine-tune of the generalist (every weight trains) on the given streams."
    model, tok = load_model(base_dir)
    for p in model.parameters(): p.requires_grad_(True)
    s = MixtureSampler(train, tc.seq_len, {d: 1.0 for d in train}, seed=tc.seed)
    return Trainer(model, tok, s, val, tc, out, device, progress=False).fit(), tok


@torch.no_grad()
def gen_speed(model, tok, n_new=96, reps=3):
    ids = torch.tensor([tok.encode("The Committee judged that the economy")])
    generate(model, ids, 8)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter(); out = generate(model, ids, n_new, temperature=0.0); dt = time.perf_counter() - t
        best = max(best, len(out[0]) / dt)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen_steps", type=int, default=1200)
    ap.add_argument("--spec_steps", type=int, default=600)
    ap.add_argument("--ft_steps", type=int, default=300)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--mb", type=float, default=1.2, help="text per domain, MB")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    work = Path(a.out or tempfile.mkdtemp(prefix="shift_eval_"))
    data = stage(data_dir(), work / "proj" / "data", a.mb)
    dev, seq = "cpu", 128
    shape = {k: v for k, v in preset("seed000").to_dict().items() if k in ("d_model", "n_layers", "n_heads", "ffn_dim")}
    R = {"machine": machine(), "settings": {k: v for k, v in vars(a).items() if k != "out"}, "shape": "seed000", "domains": ["general", *SPECS]}
    # validation runs once, at the end of each training (a full pass over every domain's held-out tail is costly on a CPU)
    tc = lambda steps, lr: TrainConfig(batch_size=a.batch_size, seq_len=seq, max_steps=steps, lr=lr,
                                       warmup_steps=min(100, steps // 10), eval_every=steps, seed=1337)

    t0 = time.perf_counter()
    rg = train_generalist(data, work / "proj/outputs/general", {**shape, "max_seq_len": seq}, tc(a.gen_steps, 1e-3),
                          tokenizer="bpe", vocab_size=8192, device=dev, overwrite=True, progress=False)
    R["generalist"] = {"wall_s": time.perf_counter() - t0, "params": rg["n_params"], "best_val_loss": rg["best_val_loss"]}
    gen, tok = load_model(work / "proj/outputs/general")
    ev = {"generalist": ppl(eval_domains(gen, tok, data))}
    print("generalist", ev["generalist"], flush=True)

    t0 = time.perf_counter()
    rs = train_specialists(work / "proj/outputs/general", work / "proj/outputs/shiftable", data_dir=data, tc=tc(a.spec_steps, 1e-3),
                           device=dev, overwrite=True, progress=False)
    full_train_s = time.perf_counter() - t0
    R["shiftable"] = {"wall_s": full_train_s, "params": rs["n_params"], "trainable": rs["n_trainable"],
                      "trainable_fraction": rs["n_trainable"] / rs["n_params"]}
    sm, _ = load_model(work / "proj/outputs/shiftable")
    ev["shiftable soft"] = ppl(eval_domains(sm, tok, data))
    _, val = load_corpus_streams(discover_domains(data), tok, 0.1, seq)
    R["routing"] = routing_report(sm, val, seq)
    sm.set_routing("topk", 1); ev["shiftable top-1"] = ppl(eval_domains(sm, tok, data)); sm.set_routing("soft")
    print("shiftable", ev["shiftable soft"], R["routing"]["accuracy"], flush=True)

    # generation speed: generalist vs shiftable (4 specialists) top-1 and soft
    speed = {"generalist": gen_speed(gen, tok)}
    sm.set_routing("topk", 1); speed["shiftable top-1"] = gen_speed(sm, tok)
    sm.set_routing("soft"); speed["shiftable soft"] = gen_speed(sm, tok)
    R["generation_tokens_per_s"] = speed
    R["generation_ratio_top1_vs_generalist"] = speed["shiftable top-1"] / speed["generalist"]

    # baselines: full fine-tune per domain (upper bound) and one dense model on the whole mixture
    train, val = load_corpus_streams(discover_domains(data), tok, 0.1, seq)
    ev["full FT per domain"] = {}
    R["finetune_wall_s"] = {}
    for d in SPECS:
        t0 = time.perf_counter()
        finetune(work / "proj/outputs/general", work / f"ft_{d}", {d: train[d]}, {d: val[d]}, tc(a.ft_steps, 1e-3), dev)
        R["finetune_wall_s"][d] = time.perf_counter() - t0
        m, _ = load_model(work / f"ft_{d}")
        ev["full FT per domain"][d] = ppl(eval_domains(m, tok, data))[d]
    t0 = time.perf_counter()
    finetune(work / "proj/outputs/general", work / "dense", train, val, tc(a.spec_steps, 1e-3), dev)
    R["dense_wall_s"] = time.perf_counter() - t0
    m, _ = load_model(work / "dense"); ev["dense mixture FT"] = ppl(eval_domains(m, tok, data))
    print("baselines done", flush=True)

    # delete one specialist, then add it back, through the manager
    settings = ProjectSettings(model=shape, tokenizer="bpe", vocab_size=8192, seq_len=seq, batch_size=a.batch_size,
                               specialist_steps=a.spec_steps, specialist_lr=1e-3, eval_every=a.spec_steps, device=dev)
    mgr = SpecialistManager(work / "proj", settings, progress=False, log=None)
    before = ev["shiftable soft"]
    dres = mgr.delete_specialist("medical")
    after_del = ppl(eval_domains(mgr.model()[0], tok, data))
    os.replace(dres["trash"], data / "medical")  # the same corpus comes back from the trash for the add
    ares = mgr.add_specialist("medical")
    after_add = ppl(eval_domains(mgr.model()[0], tok, data))
    R["delete"] = {"wall_s": dres["wall_s"], "ppl_change_other_domains": {d: after_del[d] / before[d] - 1 for d in before if d != "medical"}}
    R["add"] = {"wall_s": ares["wall_s"], "steps": ares["steps"], "init_from": ares["init_from"], "medical_ppl": after_add["medical"],
                "ratio_to_full_training": ares["wall_s"] / full_train_s, "target_ratio": 1.5 / len(SPECS)}
    ev["after delete+add medical"] = after_add

    g = ev["generalist"]
    R["eval_ppl"] = ev
    R["targets"] = {}
    for d in SPECS:
        s, ft = ev["shiftable soft"][d], ev["full FT per domain"][d]
        gain_ratio = (math.log(g[d]) - math.log(s)) / max(1e-9, math.log(g[d]) - math.log(ft))
        R["targets"][d] = {"drop_vs_generalist": 1 - s / g[d], "share_of_full_FT_log_gain": gain_ratio}
    R["targets"]["general_retention"] = ev["shiftable soft"]["general"] / g["general"] - 1
    write("shiftable_eval", R)

    from sma_kit.eval import compare_table, perplexity_bars
    md = compare_table(ev, baseline="generalist")
    atomic_write(RESULTS / "shiftable_eval.md", md + "\n")
    perplexity_bars(ev, RESULTS / "shiftable_eval.png", "Per-domain validation perplexity (seed000 shape)")
    print(md)


if __name__ == "__main__":
    main()
