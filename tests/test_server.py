"The HTTP service on a real uvicorn: self-initialisation, every route, the openai client, SSE, jobs, auth, bad input, load."
import json, os, socket, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest
from conftest import console_scripts

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi"); pytest.importorskip("uvicorn")

WORDS = {"general": "the cat sat on the mat and the dog ran in the park . ",
         "math": "12 + 30 = 42 and 7 * 6 = 42 so x = 42 . ",
         "law": "the court held that the contract was void under section 12 . ",
         "bio": "the cell divides and the gene makes a protein in the body . "}
TINY = dict(model=dict(d_model=32, n_layers=1, n_heads=2, ffn_dim=64), tokenizer="byte", seq_len=64, batch_size=4,
            lr=3e-3, generalist_steps=8, specialist_steps=8, specialist_lr=3e-3, eval_every=4, device="cpu")
KEY = "s3cret-key"
BUDGET = 240      # seconds for a server to initialise a tiny project on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def make_project(root: Path, domains=("general", "math")) -> Path:
    for d in domains:
        (root / "data" / d).mkdir(parents=True, exist_ok=True)
        (root / "data" / d / "a.txt").write_text(WORDS[d] * 150)
    (root / "sma_project.json").write_text(json.dumps(TINY))
    return root


def serve_cmd(where: Path) -> list:
    "The `sma_serve` console script as settings.ini declares it, run from a script file (as an entry point is)."
    mod, fn = console_scripts()["sma_serve"].split(":")
    script = where / "sma_serve_runner.py"
    script.write_text(f"import sys\nfrom {mod} import {fn}\nsys.exit({fn}())\n")
    return [sys.executable, str(script)]


class Server:
    "`sma_serve` in a subprocess on a free port; stopped by its pid."
    def __init__(self, project, *args, env=None):
        self.project, self.port = project, free_port()
        self.logf = open(project.parent / f"serve-{project.name}-{self.port}.log", "w")
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*serve_cmd(project.parent), "--project_dir", str(project), "--port", str(self.port),
                                      "--log_level", "warning", *map(str, args)], stdout=self.logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log()
            try: socket.create_connection(("127.0.0.1", self.port), timeout=1).close(); break
            except OSError: assert time.monotonic() < deadline, "sma_serve did not start"; time.sleep(0.2)

    def log(self) -> str: return Path(self.logf.name).read_text()[-3000:]

    def wait(self, pred, what: str, budget: float = BUDGET, **kw):
        "Poll GET /health until `pred(health)`; returns the health seen."
        deadline, seen = time.monotonic() + budget, []
        while time.monotonic() < deadline:
            h = httpx.get(self.url + "/health", timeout=30).json()
            seen.append(h["status"])
            if pred(h): return h, seen
            time.sleep(0.3)
        raise AssertionError(f"{what} within {budget} s: statuses {seen[-5:]}\n{self.log()}")

    def stop(self):
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait(10)
        self.logf.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    "A server over an empty project (data only): it initialises itself."
    s = Server(make_project(tmp_path_factory.mktemp("serve") / "proj"))
    s.first = httpx.get(s.url + "/health", timeout=30).json()       # right after the start: training has only begun
    yield s
    s.stop()


@pytest.fixture(scope="module")
def ready(srv):
    h, seen = srv.wait(lambda h: h["status"] == "ok" and h["initialized"], "initialisation")
    assert h["specialists"] == ["math"], h
    return srv


def test_starts_at_once_and_initialises(srv):
    assert srv.first["status"] == "initializing" and srv.first["init"]["status"] in ("queued", "running"), srv.first
    ready_before = httpx.get(srv.url + "/ready", timeout=30)
    assert ready_before.status_code in (200, 503)
    if ready_before.status_code == 503: assert ready_before.headers["retry-after"]
    h, _ = srv.wait(lambda h: h["status"] == "ok" and h["initialized"], "initialisation")
    assert h["init"]["status"] == "succeeded" and h["init"]["total"] > 0 and h["model"]["seq_len"] == 64
    assert httpx.get(srv.url + "/ready", timeout=30).status_code == 200


def test_page_and_specialists(ready):
    page = httpx.get(ready.url + "/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and 'id="spec-list"' in page.text
    assert "http://" not in page.text and "https://" not in page.text      # nothing from a CDN: works offline
    s = httpx.get(ready.url + "/specialists", timeout=30).json()
    assert s["specialists"] == ["math"] and s["jobs"] == []


def test_generate_json(ready):
    r = httpx.post(ready.url + "/generate", json={"prompt": "the cat", "max_new_tokens": 8, "seed": 1}, timeout=60)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["prompt"] == "the cat" and j["n_tokens"] == len(j["gate"]["tokens"]) <= 8
    assert j["gate"]["experts"] == ["base", "math"] and abs(sum(j["gate"]["mean"]) - 1) < 1e-3
    assert "".join(t for t, _ in j["gate"]["tokens"]) == j["completion"] and j["finish_reason"] in ("stop", "length")
    forced = httpx.post(ready.url + "/generate", json={"prompt": "the cat", "max_new_tokens": 4, "expert": "math", "routing": "hard"}, timeout=60)
    assert forced.status_code == 200, forced.text


def sse_events(resp) -> list:
    "The `data:` payloads of an SSE response, parsed by hand."
    out = []
    for line in resp.iter_lines():
        if line.startswith("data: "): out.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
        else: assert line == "", line
    return out


def test_generate_stream_raw_sse(ready):
    with httpx.stream("POST", ready.url + "/generate", json={"prompt": "the dog", "max_new_tokens": 12, "temperature": 0, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        ev = sse_events(r)
    toks, done = [e for e in ev if e["type"] == "token"], ev[-1]
    assert done["type"] == "done" and all(e["type"] == "token" for e in ev[:-1])
    assert "".join(e["text"] for e in toks) == done["completion"]
    plain = httpx.post(ready.url + "/generate", json={"prompt": "the dog", "max_new_tokens": 12, "temperature": 0}, timeout=60).json()
    assert plain["completion"] == done["completion"]      # greedy: streaming changes nothing


def test_openai_client(ready):
    openai = pytest.importorskip("openai")
    c = openai.OpenAI(base_url=ready.url + "/v1", api_key="unused", timeout=60, max_retries=0)
    ids = [m.id for m in c.models.list().data]
    assert ids == ["sma", "sma-generalist", "sma-expert-math"]
    r = c.completions.create(model="sma", prompt="the cat", max_tokens=6, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens <= 6 and r.usage.prompt_tokens == len("the cat".encode())
    ch = c.chat.completions.create(model="sma-expert-math", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "12 + 30"}], max_tokens=6)
    assert ch.choices[0].message.role == "assistant" and isinstance(ch.choices[0].message.content, str)
    assert ch.usage.total_tokens == ch.usage.prompt_tokens + ch.usage.completion_tokens
    parts = list(c.chat.completions.create(model="sma-generalist", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True, temperature=0))
    assert parts[-1].choices[0].finish_reason in ("stop", "length") and all(p.choices[0].finish_reason is None for p in parts[:-1])
    streamed = "".join(p.choices[0].delta.content or "" for p in parts)
    whole = c.chat.completions.create(model="sma-generalist", messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0)
    assert streamed.strip() == whole.choices[0].message.content
    texts = list(c.completions.create(model="sma", prompt="the", max_tokens=5, stream=True, temperature=0))
    assert texts[-1].choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.NotFoundError): c.completions.create(model="gpt-4", prompt="x", max_tokens=2)


def test_openai_raw_sse(ready):
    with httpx.stream("POST", ready.url + "/v1/completions", json={"model": "sma", "prompt": "the", "max_tokens": 5, "stream": True}, timeout=60) as r:
        ev = sse_events(r)
    assert ev[-1] == "[DONE]" and ev[-2]["choices"][0]["finish_reason"] in ("stop", "length") and ev[-2]["usage"]["completion_tokens"] <= 5
    assert all(e["object"] == "text_completion" and e["choices"][0]["finish_reason"] is None for e in ev[:-2])


BAD = [("/generate", {"prompt": "", "max_new_tokens": 4}, 422, "prompt"),
       ("/generate", {"prompt": "x", "max_new_tokens": 0}, 422, "max_new_tokens"),
       ("/generate", {"prompt": "x", "max_new_tokens": 100000}, 422, "max_new_tokens"),
       ("/generate", {"prompt": "x", "max_new_tokens": 64}, 422, "window"),
       ("/generate", {"prompt": "x" * 200, "max_new_tokens": 8}, 413, "window"),
       ("/generate", {"prompt": "x", "temperature": -1}, 422, "temperature"),
       ("/generate", {"prompt": "x", "routing": "sideways"}, 422, "routing"),
       ("/generate", {"prompt": "x", "expert": "nobody"}, 422, "unknown expert"),
       ("/generate", {"prompt": "x", "colour": "red"}, 422, "colour"),
       ("/specialists", {"name": "../x"}, 422, "name"),
       ("/specialists", {"name": "General"}, 422, "name"),
       ("/specialists", {"name": "math"}, 409, "already exists"),
       ("/specialists", {"name": "nocorpus"}, 422, "no corpus folder"),
       ("/v1/completions", {"model": "sma", "prompt": "x", "n": 2}, 422, "n"),
       ("/v1/chat/completions", {"model": "sma", "messages": []}, 422, "messages"),
       ("/v1/chat/completions", {"model": "sma", "messages": [{"role": "robot", "content": "x"}]}, 422, "role")]


@pytest.mark.parametrize("path,body,status,needle", BAD)
def test_bad_input(ready, path, body, status, needle):
    r = httpx.post(ready.url + path, json=body, timeout=60)
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert needle in e["message"] and "Traceback" not in r.text
    if status == 413: assert e["limit"] == 64 and e["prompt_tokens"] == 200


def test_bad_routes(ready):
    assert httpx.post(ready.url + "/generate", content=b"{not json", headers={"content-type": "application/json"}, timeout=30).status_code == 422
    assert httpx.get(ready.url + "/jobs/nope", timeout=30).status_code == 404
    assert httpx.delete(ready.url + "/specialists/nobody", timeout=30).status_code == 404
    r = httpx.delete(ready.url + "/specialists/math", timeout=30)
    assert r.status_code == 409 and "last specialist" in r.json()["error"]["message"]
    assert httpx.get(ready.url + "/nowhere", timeout=30).status_code == 404


def test_add_under_load_cancel_and_delete(ready, tmp_path):
    proj = ready.project
    for d in ("law", "bio"):
        (proj / "data" / d).mkdir(); (proj / "data" / d / "a.txt").write_text(WORDS[d] * 150)
    stop, results = threading.Event(), []
    def client(i):
        with httpx.Client(timeout=120) as c:
            while not stop.is_set() and len(results) < 400:
                r = c.post(ready.url + "/generate", json={"prompt": f"the cat {i}", "max_new_tokens": 6})
                results.append(r.status_code)
    with ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(client, i) for i in range(4)]
        r = httpx.post(ready.url + "/specialists", json={"name": "law", "steps": 6}, timeout=30)
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        again = httpx.post(ready.url + "/specialists", json={"name": "law"}, timeout=30)
        assert again.status_code == 409
        second = httpx.post(ready.url + "/specialists", json={"name": "bio", "steps": 500}, timeout=30).json()["job"]
        deadline = time.monotonic() + BUDGET
        while (j := httpx.get(f"{ready.url}/jobs/{job}", timeout=30).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, j
            time.sleep(0.3)
        assert j["status"] == "succeeded" and j["total"] == 6 and j["step"] == 6, j
        while (b := httpx.get(f"{ready.url}/jobs/{second}", timeout=30).json())["status"] == "queued":
            assert time.monotonic() < deadline, b
            time.sleep(0.2)
        assert httpx.delete(ready.url + "/specialists/law", timeout=30).status_code == 409    # a job is running
        c = httpx.post(f"{ready.url}/jobs/{second}/cancel", timeout=30)
        assert c.status_code == 200
        while (b := httpx.get(f"{ready.url}/jobs/{second}", timeout=30).json())["status"] == "running":
            assert time.monotonic() < deadline, b
            time.sleep(0.2)
        stop.set()
        for f in futs: f.result(timeout=180)
    assert b["status"] == "cancelled", b
    assert httpx.post(f"{ready.url}/jobs/{second}/cancel", timeout=30).status_code == 409
    assert results and set(results) == {200}, sorted(set(results))
    assert httpx.get(ready.url + "/specialists", timeout=30).json()["specialists"] == ["math", "law"]    # bio was cancelled
    d = httpx.delete(ready.url + "/specialists/law", timeout=60)
    assert d.status_code == 200 and d.json()["specialists"] == ["math"]
    assert [m["id"] for m in httpx.get(ready.url + "/v1/models", timeout=30).json()["data"]] == ["sma", "sma-generalist", "sma-expert-math"]


def test_queue_full_is_429(tmp_path_factory, ready):
    s = Server(ready.project, "--workers", 1, "--max_queue", 1)
    try:
        s.wait(lambda h: h["ready"], "ready", 60)
        go = threading.Barrier(8)
        def one(i):
            go.wait(30)
            return httpx.post(s.url + "/generate", json={"prompt": "the", "max_new_tokens": 60, "temperature": 5, "top_k": 0}, timeout=120)
        with ThreadPoolExecutor(8) as ex: rs = list(ex.map(one, range(8)))
        codes = [r.status_code for r in rs]
        assert set(codes) == {200, 429} and codes.count(200) >= 2, codes     # one worker + a queue of one, eight at once
        busy = next(r for r in rs if r.status_code == 429)
        assert busy.headers["retry-after"] == "1" and "queue is full" in busy.json()["error"]["message"]
    finally: s.stop()


def test_auth(tmp_path_factory, ready):
    s = Server(ready.project, env={"SMA_API_KEY": KEY})
    try:
        assert httpx.get(s.url + "/health", timeout=30).status_code == 200
        assert httpx.get(s.url + "/", timeout=30).status_code == 200
        for method, path in [("GET", "/specialists"), ("GET", "/ready"), ("GET", "/v1/models"), ("POST", "/generate"), ("GET", "/jobs"),
                             ("POST", "/v1/completions"), ("DELETE", "/specialists/math")]:
            for h in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                r = httpx.request(method, s.url + path, headers=h, timeout=30)
                assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", (method, path, h, r.text)
        ok = {"Authorization": f"Bearer {KEY}"}
        assert httpx.get(s.url + "/specialists", headers=ok, timeout=30).json()["specialists"] == ["math"]
        openai = pytest.importorskip("openai")
        assert [m.id for m in openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0).models.list().data][0] == "sma"
        with pytest.raises(openai.AuthenticationError): openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0).models.list()
    finally: s.stop()


def test_disconnect_leaves_service_working(ready):
    "Streaming clients that go away mid-stream break nothing."
    for _ in range(3):
        with httpx.stream("POST", ready.url + "/generate", json={"prompt": "the", "max_new_tokens": 60, "stream": True}, timeout=60) as r:
            next(r.iter_lines())
    r = httpx.post(ready.url + "/generate", json={"prompt": "the", "max_new_tokens": 2}, timeout=60)
    assert r.status_code == 200, r.text


class SlowManager:
    "A stand-in for the manager whose generation takes 20 ms a token and records how far it got."
    def __init__(self):
        from sma_kit.tokenizer import build_tokenizer
        self.tok, self.done, self.counts = build_tokenizer("byte", ["a"]), threading.Event(), []
    def model(self): return None, self.tok
    def generate(self, prompt, on_token=None, max_new_tokens=8, **kw):
        n = 0
        try:
            for _ in range(max_new_tokens): on_token(0, 97); n += 1; time.sleep(0.02)
            return {"completion": "a" * n, "n_tokens": n}
        finally: self.counts.append(n); self.done.set()


def test_disconnect_stops_generation(tmp_path):
    "A client that leaves (streaming or not) stops its generation long before the 500 tokens it asked for."
    import uvicorn
    from sma_kit.server import create_app
    app = create_app(tmp_path, init=False)
    svc, fake = app.state.svc, SlowManager()
    svc.engine.m, svc.check_prompt = fake, lambda *a, **k: 1      # only the engine's manager is replaced
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True); th.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started: assert time.monotonic() < deadline; time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/generate"
        with httpx.stream("POST", url, json={"prompt": "x", "max_new_tokens": 500, "stream": True}, timeout=30) as r:
            assert json.loads(next(l for l in r.iter_lines() if l)[6:])["type"] == "token"
        assert fake.done.wait(8) and fake.counts[-1] < 400, fake.counts
        fake.done.clear()
        with pytest.raises(httpx.ReadTimeout): httpx.post(url, json={"prompt": "x", "max_new_tokens": 500}, timeout=httpx.Timeout(30, read=1))
        assert fake.done.wait(8) and fake.counts[-1] < 400, fake.counts
        assert httpx.post(url, json={"prompt": "x", "max_new_tokens": 3}, timeout=30).json()["n_tokens"] == 3
    finally:
        server.should_exit = True; th.join(30)


def test_server_modules_import_no_backend():
    code = "import sys, sma_kit.server, sma_kit.openai_api; print(sorted(m for m in ('torch', 'jax') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_cli_errors(tmp_path):
    p = subprocess.run([*serve_cmd(tmp_path), "--project_dir", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such project folder"]
