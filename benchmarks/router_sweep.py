"""Per-domain figures of routers trained on one member-features cache, on their own validation split (no member runs).

For each router dir: the mixture's perplexity per dataset against the best single member's, the selected member's,
and each member's share of the tokens (the share of tokens on which it has the top routing weight, as `sma_eval_lm`
counts it). The validation split is part of the router's training data (its last 10%), never the evaluation text, so
hyperparameters picked on these figures do not look at the held-out tail that `sma_eval_lm` scores.

    python benchmarks/router_sweep.py --features RUN/feat --datasets A,B,... --max_per_dataset 400 ROUTER_DIR [ROUTER_DIR ...]
"""
import argparse, json, math
from pathlib import Path
import numpy as np
import torch
from sma_kit.router_data import router_data
from sma_kit.torch.router import RouterEnsemble, log_route_weights
from sma_kit.torch.router_features import MemberFeatures, META


def figures(ens, feats: MemberFeatures, ds: np.ndarray, names: list) -> dict:
    "{dataset: {mixture, select, best_member, best, own_share, share}} over the validation tokens (`ds`: dataset of each token)."
    lw, gold = [], []
    with torch.no_grad():
        ens.eval()
        for out, _ in feats.chunks(ens, "val"):
            lw.append(log_route_weights(out.scores[0])); gold.append(out.logprobs[:, 0, :, 0].T)
    lw, gold = torch.cat(lw), torch.cat(gold)                       # [M, N] each
    mix = torch.logsumexp(lw + gold, -1)
    pick = lw.argmax(-1)
    sel = gold.gather(-1, pick[:, None])[:, 0]
    res = {}
    for j, d in enumerate(names):
        m = torch.from_numpy(ds == j)
        member = {n: math.exp(-float(gold[m, i].mean())) for i, n in enumerate(ens.names)}
        best = min(member, key=member.get)
        share = {n: float((pick[m] == i).float().mean()) for i, n in enumerate(ens.names)}
        res[d] = {"mixture": math.exp(-float(mix[m].mean())), "select": math.exp(-float(sel[m].mean())), "best_member": best,
                  "best": member[best], "share": share, "own_share": share[best]}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("routers", nargs="+")
    ap.add_argument("--features", required=True)
    ap.add_argument("--datasets", required=True)
    ap.add_argument("--max_per_dataset", type=int, default=None)
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    meta = json.loads((Path(a.features) / META).read_text())
    feats, data, out = MemberFeatures(a.features, meta), None, {}
    for r in a.routers:
        ens, tok = RouterEnsemble.from_pretrained(r, device="cpu")
        if data is None:
            data = router_data(a.datasets, tok, a.max_length, 0.1, a.seed, a.max_per_dataset)
            ds = np.repeat([x[2] for x in data.val], meta["counts"]["val"])
        f = out[r] = figures(ens, feats, ds, data.names)
        print(Path(r).name, " ".join(f"{d}: {v['mixture']:.1f}/{v['best']:.1f} ({v['mixture'] / v['best'] - 1:+.1%}) own {v['own_share']:.2f}"
                                     for d, v in f.items()), flush=True)
    if a.json: Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
