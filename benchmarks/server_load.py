"""Load test of `sma_serve` on 127.0.0.1: 8 concurrent clients for 60 s asking for 32-token completions
(`POST /v1/completions`), then the same while a specialist is added; and the HTTP overhead of `POST /generate` against
calling `SpecialistManager.generate` directly, both measured in the same run, interleaved, on the same model.

The project is a small one trained at the start (byte tokenizer, d_model 64, 2 layers, window 128) so that the figures
are about the service, not the model. Records requests/s, p50/p95 latency, tokens/s, errors, and the load average
(the machine may be shared).

    python benchmarks/server_load.py [--seconds 60] [--clients 8] [--tokens 32] [--repeats 20]
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
WORDS = {"general": "the cat sat on the mat and the dog ran in the park while the sun was warm . ",
         "math": "12 + 30 = 42 and 7 * 6 = 42 so x = 42 ; 9 - 4 = 5 . ",
         "law": "the court held that the contract was void under section 12 of the act . "}
SETTINGS = dict(model=dict(d_model=64, n_layers=2, n_heads=4, ffn_dim=128), tokenizer="byte", seq_len=128, batch_size=8,
                lr=3e-3, generalist_steps=40, specialist_steps=40, specialist_lr=3e-3, eval_every=20, device="cpu")
PROMPT = "the cat sat on the"


def project(root: Path) -> Path:
    for d in ("general", "math", "law"):
        (root / "data" / d).mkdir(parents=True, exist_ok=True)
        (root / "data" / d / "a.txt").write_text(WORDS[d] * 300)
    (root / "sma_project.json").write_text(json.dumps(SETTINGS))
    (root / "data" / "law").rename(root / "law.later")      # added during the second load phase
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else None


def load(httpx, url: str, seconds: float, clients: int, tokens: int) -> dict:
    "`clients` threads posting completions for `seconds`; latency of each, tokens, errors."
    lat, toks, errors, lock = [], [], [], threading.Lock()
    end = time.monotonic() + seconds
    def client(i):
        with httpx.Client(timeout=300) as c:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    r = c.post(url + "/v1/completions", json={"model": "sma", "prompt": f"{PROMPT} {i}", "max_tokens": tokens, "temperature": 0.8})
                    ok = r.status_code == 200
                except Exception as e: ok, r = False, e
                dt = time.perf_counter() - t0
                with lock:
                    if ok: lat.append(dt); toks.append(r.json()["usage"]["completion_tokens"])
                    else: errors.append(str(getattr(r, "status_code", r)))
    t0 = time.perf_counter()
    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(lat), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "requests_per_s": round(len(lat) / wall, 2), "p50_latency_s": round(pct(lat, 0.5), 3), "p95_latency_s": round(pct(lat, 0.95), 3),
            "tokens_per_s": round(sum(toks) / wall, 1), "mean_tokens": round(statistics.mean(toks), 1) if toks else 0}


def overhead(httpx, url: str, proj: Path, tokens: int, repeats: int) -> dict:
    "Median wall time of one 32-token greedy generation over HTTP and directly, interleaved (same prompt, same model)."
    from sma_kit.manager import SpecialistManager
    m = SpecialistManager(proj, progress=False, log=None)
    body = {"prompt": PROMPT, "max_new_tokens": tokens, "temperature": 0}
    http, direct, n, same = [], [], set(), 0
    with httpx.Client(timeout=300) as c:
        c.post(url + "/generate", json=body); m.generate(PROMPT, tokens, temperature=0)        # warm both
        for _ in range(repeats):
            t0 = time.perf_counter(); r = c.post(url + "/generate", json=body); http.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); d = m.generate(PROMPT, tokens, temperature=0); direct.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            n.add(d["n_tokens"]); same += r.json()["completion"] == d["completion"]
    return {"repeats": repeats, "tokens": sorted(n), "same_text": same, **summarise(direct, http)}


def summarise(direct: list, http: list) -> dict:
    "Overhead of HTTP over direct calls, four ways (on a loaded machine single runs swing by tens of per cent)."
    pc = lambda a, b: round(100 * (a / b - 1), 1)
    med = statistics.median
    return {"direct_median_s": round(med(direct), 4), "http_median_s": round(med(http), 4),
            "overhead_pct": pc(med(http), med(direct)),                         # ratio of the medians: the headline figure
            "overhead_pct_mean": pc(statistics.mean(http), statistics.mean(direct)),
            "overhead_pct_min": pc(min(http), min(direct)),                     # the least disturbed run of each
            "overhead_pct_paired_median": round(100 * med([h - d for h, d in zip(http, direct)]) / med(direct), 1),
            "direct_s": [round(x, 4) for x in direct], "http_s": [round(x, 4) for x in http]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60); ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32); ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    import httpx
    res = {"machine": machine(), "load_average_start": [round(x, 2) for x in os.getloadavg()],
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip(),
           "settings": SETTINGS, "workers": 1, "max_queue": 16,
           "command": f"python benchmarks/server_load.py --seconds {a.seconds:g} --clients {a.clients} --tokens {a.tokens} --repeats {a.repeats}"}
    with tempfile.TemporaryDirectory(prefix="sma_server_load_") as tmp:
        proj, port = project(Path(tmp) / "proj"), free_port()
        url = f"http://127.0.0.1:{port}"
        code = "import json, sys; from sma_kit.server import serve; serve(**json.loads(sys.argv[1]))"
        log = open(Path(tmp) / "serve.log", "w")
        srv = subprocess.Popen([sys.executable, "-c", code, json.dumps(dict(project_dir=str(proj), port=port, log_level="warning", max_queue=16))],
                               stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        try:
            t0 = time.perf_counter()
            while True:
                assert srv.poll() is None, (Path(tmp) / "serve.log").read_text()[-2000:]
                try:
                    if httpx.get(url + "/health", timeout=30).json()["status"] == "ok": break
                except httpx.HTTPError: pass
                time.sleep(1)
            res["initialise_s"] = round(time.perf_counter() - t0, 1)
            print("initialised in", res["initialise_s"], "s", flush=True)
            res["overhead"] = overhead(httpx, url, proj, a.tokens, a.repeats)
            print("overhead", {k: v for k, v in res["overhead"].items() if not k.endswith("_s") or "median" in k}, flush=True)
            res["load"] = load(httpx, url, a.seconds, a.clients, a.tokens)
            print("load", res["load"], flush=True)
            (proj / "law.later").rename(proj / "data" / "law")
            job = httpx.post(url + "/specialists", json={"name": "law"}, timeout=30).json()["job"]
            res["load_while_adding"] = load(httpx, url, a.seconds, a.clients, a.tokens)
            j = httpx.get(f"{url}/jobs/{job}", timeout=30).json()
            while j["status"] in ("queued", "running"):
                time.sleep(1); j = httpx.get(f"{url}/jobs/{job}", timeout=30).json()
            res["load_while_adding"]["add"] = {"status": j["status"], "steps": j["total"], "wall_s": round(j["finished"] - j["started"], 1)}
            print("load while adding", res["load_while_adding"], flush=True)
        finally:
            srv.terminate(); srv.wait(30)
    res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    res["note"] = "measured on a shared machine under other engineers' load (see load_average_*); absolute figures are pessimistic"
    write("server", res)


if __name__ == "__main__":
    main()
