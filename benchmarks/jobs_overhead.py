"""Overhead of running a job through `sma_run_job` (papermill: kernel start, parameter injection, notebook
bookkeeping) over calling the library directly, for a tiny train_generalist job.

The direct run executes the very same code cells of nbs/jobs/train_generalist.ipynb in a fresh `python`
process (parameters assigned after the parameters cell), so the difference is what papermill and the kernel
cost, not the job. Each way runs REPEATS times, interleaved; the overhead is the median of the per-repetition
differences (robust to the load swings of a shared machine), with every raw time kept.

    python benchmarks/jobs_overhead.py [--repeats 3]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "SMA_CACHE_DIR": tempfile.mkdtemp(prefix="sma_cache_")}
BIN = Path(sys.executable).parent
TINY = dict(d_model=32, n_heads=2, n_layers=1, ffn_dim=64, seq_len=32, vocab_size=300, max_steps=6, batch_size=4, eval_every=3, seed=7)

DIRECT = r'''
import json, sys
nb = json.load(open(sys.argv[1])); params = json.loads(sys.argv[2]); g = {"__name__": "__main__"}
for c in nb["cells"]:
    if c["cell_type"] != "code": continue
    exec(compile("".join(c["source"]), "cell", "exec"), g)
    if "parameters" in c["metadata"].get("tags", []): g.update(params)
'''


def corpus(root: Path) -> Path:
    (root / "general").mkdir(parents=True); (root / "math").mkdir()
    (root / "general" / "pigs.txt").write_text("".join(f"{i} little pigs went to market and {i % 7} came home to eat {i % 5} apples.\n" for i in range(500)))
    (root / "math" / "sums.txt").write_text("".join(f"What is {i} + {i}? {2 * i}\n" for i in range(400)))
    return root


def timed(cmd) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    dt = time.perf_counter() - t0
    if p.returncode: sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr[-3000:]}")
    return dt


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--repeats", type=int, default=3); a = ap.parse_args()
    from sma_kit.jobs import job_notebook
    nb = job_notebook("train_generalist")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); data = corpus(d / "data")
        # the console script as its entry point runs it: a __main__ file calling the call_parse function
        (d / "sma_run_job.py").write_text("import sys\nfrom sma_kit.jobs import run_job_cli\nif __name__ == '__main__':\n    sys.exit(run_job_cli())\n")
        run_job = [sys.executable, str(d / "sma_run_job.py")]
        params = {**TINY, "data_dir": str(data)}
        flags = [x for k, v in params.items() for x in ("-p", k, str(v))]
        job_flags = [x for k, v in params.items() for x in ("--p", k, str(v))]
        trivial = d / "trivial.ipynb"
        trivial.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "x = 1", "outputs": [], "execution_count": None}],
                                       "metadata": {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}))
        ways = {
            "sma_run_job": lambda i: run_job + ["train_generalist", *job_flags, "--output_dir", d / f"job{i}", "--quiet"],
            "papermill": lambda i: [BIN / "papermill", nb, d / f"pm{i}.ipynb", *flags, "-p", "output_dir", d / f"pm{i}", "--no-progress-bar"],
            "direct": lambda i: [sys.executable, "-c", DIRECT, nb, json.dumps({**params, "output_dir": str(d / f"direct{i}")})],
            "kernel_only": lambda i: [BIN / "papermill", trivial, d / f"triv{i}.ipynb", "--no-progress-bar"],
            "python_only": lambda i: [sys.executable, "-c", "pass"],
        }
        times = {k: [] for k in ways}
        timed(ways["direct"]("warm"))   # warm the file cache once
        for i in range(a.repeats):
            for k, cmd in ways.items():
                times[k].append(timed([str(c) for c in cmd(i)])); print(f"{k:12s} run {i}: {times[k][-1]:.2f} s", flush=True)
        same = [json.loads((d / f"{w}0" / "metrics.json").read_text())["figures"] for w in ("job", "pm", "direct")]
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = lambda a, b: statistics.median(x - y for x, y in zip(times[a], times[b]))
    res = {"what": "wall time of one tiny train_generalist job (6 steps, 1-layer d_model 32) three ways, each in a fresh process",
           "command": "python benchmarks/jobs_overhead.py --repeats %d" % a.repeats,
           "machine": {**machine(), "loadavg_1m": os.getloadavg()[0]},
           "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
           "median_s": {k: round(v, 3) for k, v in med.items()},
           # paired: each repetition runs every way back to back, so a load swing on the shared machine hits both sides
           "overhead_s": {"sma_run_job_vs_direct": round(paired("sma_run_job", "direct"), 3),
                          "papermill_vs_direct": round(paired("papermill", "direct"), 3),
                          "kernel_start_and_papermill": round(paired("kernel_only", "python_only"), 3),
                          "note": "median over repetitions of the per-repetition difference"},
           "target_s": 5.0,
           "same_figures_all_ways": same[0] == same[1] == same[2]}
    res["meets_target"] = res["overhead_s"]["sma_run_job_vs_direct"] < res["target_s"]
    print(json.dumps({k: res[k] for k in ("median_s", "overhead_s", "same_figures_all_ways", "meets_target")}, indent=2))
    write("jobs_overhead", res)


if __name__ == "__main__":
    main()
