"""Sandbox throughput of sma_kit.sandbox / sma_kit.code_eval on this machine.

For every sandbox mode that works here ('bwrap', 'unshare', 'limits'):
  * per-sample overhead: wall time of a trivial `pass` program (sandboxed program + judge process), run one at a
    time (median/p90 over --trivial runs);
  * HumanEval end to end: all 164 canonical solutions scored with `score_samples` over all cores.
In the default mode also: all 164 `return None` solutions, and (when SMA_DATA_DIR is set) all 500 MBPP test
tasks with the reference code and with a wrong solution.

Usage:  python benchmarks/code_eval_bench.py [--trivial 50] [--out benchmarks/results/code_eval.json]
"""
import argparse, datetime, json, os, platform, statistics, sys, time

from sma_kit.checkpoint import atomic_write
from sma_kit.sandbox import available_sandbox_modes, sandbox_mode, sandbox_info, run_program
from sma_kit.code_eval import score_samples, read_humaneval, read_mbpp, default_mbpp_path, wrong_completion


def trivial_overhead(mode, n):
    run_program("pass", mode=mode, unsafe_sandbox=True)   # warm the page cache
    ts = []
    for _ in range(n):
        r = run_program("pass", mode=mode, unsafe_sandbox=True)
        assert r.passed, r
        ts.append(r.duration)
    ts.sort()
    return dict(n=n, median_s=round(statistics.median(ts), 4), p90_s=round(ts[int(0.9 * (n - 1))], 4),
                min_s=round(ts[0], 4))


def score(samples, dataset, problems, mode, workers):
    t0 = time.perf_counter()
    res = score_samples(samples, dataset, k=(1,), problems=problems, mode=mode, workers=workers, progress=False,
                        unsafe_sandbox=True, timeout=30)
    dt = time.perf_counter() - t0
    return dict(programs=len(samples), seconds=round(dt, 2), programs_per_s=round(len(samples) / dt, 1),
                pass_at_1=res["pass@1"], status_counts=res["status_counts"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trivial", type=int, default=50, help="trivial runs per mode for the overhead median")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel sandboxes")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "code_eval.json"))
    args = ap.parse_args()

    he = read_humaneval()
    he_good = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in he.items()]
    he_bad = [{"task_id": t, "completion": wrong_completion("humaneval", p)} for t, p in he.items()]
    out = dict(benchmark="sma_kit.code_eval sandbox throughput",
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               machine=dict(cpu_count=os.cpu_count(), platform=platform.platform(), machine=platform.machine(),
                            python=sys.version.split()[0], euid=os.geteuid(), loadavg_start=os.getloadavg()),
               sandbox={**sandbox_info(), "python": os.path.basename(sys.executable)}, workers=args.workers, modes={})
    for mode in available_sandbox_modes():
        print(f"[{mode}] trivial program overhead ...", flush=True)
        m = dict(trivial_pass=trivial_overhead(mode, args.trivial))
        print(f"[{mode}]   median {m['trivial_pass']['median_s'] * 1000:.1f} ms", flush=True)
        print(f"[{mode}] HumanEval canonical, 164 programs ...", flush=True)
        m["humaneval_canonical"] = score(he_good, "humaneval", he, mode, args.workers)
        print(f"[{mode}]   {m['humaneval_canonical']['seconds']} s, pass@1={m['humaneval_canonical']['pass_at_1']}", flush=True)
        out["modes"][mode] = m
    mode = sandbox_mode()
    d = out["default_mode"] = dict(mode=mode)
    print(f"[{mode}] HumanEval wrong solutions ...", flush=True)
    d["humaneval_wrong"] = score(he_bad, "humaneval", he, mode, args.workers)
    if default_mbpp_path() and os.path.isfile(default_mbpp_path()):
        mb = read_mbpp()
        print(f"[{mode}] MBPP reference code, 500 programs ...", flush=True)
        d["mbpp_reference"] = score([{"task_id": t, "completion": p["code"]} for t, p in mb.items()], "mbpp", mb,
                                    mode, args.workers)
        print(f"[{mode}]   {d['mbpp_reference']['seconds']} s, pass@1={d['mbpp_reference']['pass_at_1']}", flush=True)
        d["mbpp_wrong"] = score([{"task_id": t, "completion": wrong_completion("mbpp", p)} for t, p in mb.items()],
                                "mbpp", mb, mode, args.workers)
    else:
        d["mbpp"] = "skipped: SMA_DATA_DIR not set"
    out["machine"]["loadavg_end"] = os.getloadavg()
    atomic_write(args.out, json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k in ("modes", "default_mode")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
