"Orchestrator: planners, routing with trained models, execution (dependencies, failures, concurrency), endpoints, CLI errors."
import json, os, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest
from conftest import run_cli
from sma_kit.config import SmaError, TrainConfig
from sma_kit.orchestrator_plan import (Subtask, Plan, Route, rules_plan, make_plan, HTTPSpecialist, LMSpecialist, HFSpecialist,
                                       LikelihoodRouter, fit_router, route)
from sma_kit.orchestrator import Orchestrator, execute


# ---- a tiny OpenAI-compatible server on 127.0.0.1 --------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        reply = self.server.reply
        out = {"choices": [{"index": i, "text": reply(p) if callable(reply) else reply} for i, p in enumerate(prompts)]}
        data = json.dumps(out).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(data)))
        self.end_headers(); self.wfile.write(data)

@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.reply = [], "ok"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True); t.start()
    yield srv
    srv.shutdown(); srv.server_close(); t.join(5)

def url(srv): return f"http://127.0.0.1:{srv.server_address[1]}/v1"


# ---- planners ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_, parts", [
    ("1. Solve 12 + 30.\n2. Explain what the FOMC does.\n3) Define cross-validation.", ["Solve 12 + 30.", "Explain what the FOMC does.", "Define cross-validation."]),
    ("- summarise the abstract\n- list the side effects", ["summarise the abstract", "list the side effects"]),
    ("What is a p-value?\nWhat did the Committee decide?", ["What is a p-value?", "What did the Committee decide?"]),
    ("Compute the mean of 3 and 5 and explain what inflation is.", ["Compute the mean of 3 and 5", "Explain what inflation is."]),
    ("Calculate 7 * 8; describe gradient boosting", ["Calculate 7 * 8", "Describe gradient boosting"]),
])
def test_rules_planner_splits(request_, parts):
    assert [s.text for s in rules_plan(request_)[0]] == parts

@pytest.mark.parametrize("request_", [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether?",
    "Explain the trade-off between bias and variance in ridge regression.",
    "The Committee decided to maintain the target range for the federal funds rate and noted that inflation remained elevated.",
])
def test_rules_planner_keeps_one_request_whole(request_):
    sub = rules_plan(request_)[0]
    assert len(sub) == 1 and sub[0].text == request_ and sub[0].deps == []

def test_rules_planner_dependencies():
    sub = rules_plan("1. Solve 6 * 7\n2. Explain monetary policy\n3. Write a sentence that uses the answer of step 1")[0]
    assert [s.deps for s in sub] == [[], [], ["1"]]
    sub = rules_plan("Compute 2 + 2, then square the result.")[0]
    assert [(s.text, s.deps) for s in sub] == [("Compute 2 + 2", []), ("Square the result.", ["1"])]

def test_lm_planner_endpoint_broken_json_falls_back(server):
    server.reply = '{"subtasks": [{"id": 1, "text": "Solve 2+2"}'         # cut off: not valid JSON
    ep = HTTPSpecialist("planner", url(server), "tiny", timeout=10)
    p = make_plan("Solve 2+2. Explain inflation.", "lm", ep, retries=1)
    assert p.planner == "rules" and [s.text for s in p.subtasks] == ["Solve 2+2.", "Explain inflation."]
    assert len(server.requests) == 2 and server.requests[0][0] == "/v1/completions"
    assert any("not valid JSON" in n for n in p.notes) and p.notes[-1] == "fell back to the rules planner"

def test_lm_planner_endpoint_good_json(server):
    server.reply = 'Plan: {"subtasks": [{"id": "a", "text": "Solve 2+2", "deps": []}, {"id": "b", "text": "Explain it", "deps": ["a"]}]}'
    p = make_plan("Solve 2+2 and explain it", "lm", HTTPSpecialist("planner", url(server), "tiny", timeout=10))
    assert p.planner == "lm" and [(s.id, s.deps) for s in p.subtasks] == [("a", []), ("b", ["a"])] and not p.notes


# ---- execution with stand-in specialists ---------------------------------------------------------------------------------------

class Echo:
    "Answers `<prompt>` after `delay` s, or raises; records each call's interval and prompts."
    def __init__(self, delay=0.0, boom=False): self.delay, self.boom, self.calls = delay, boom, []
    def complete(self, prompts, max_new_tokens=64, temperature=0.0, seed=0):
        t = time.perf_counter(); time.sleep(self.delay)
        if self.boom: raise ValueError("weights exploded")
        self.calls.append((t, time.perf_counter(), list(prompts))); return [f"<{p}>" for p in prompts]

def routes(m): return [Route(i, s, {}, 1.0, "test") for i, s in m.items()]

def test_dependent_subtasks_see_their_inputs():
    sp = {"x": Echo(), "y": Echo()}
    plan = Plan("r", [Subtask("1", "Solve 2+2."), Subtask("2", "Name a colour."), Subtask("3", "Use both.", ["1", "2"])], "rules")
    out = execute(plan, routes({"1": "x", "2": "y", "3": "x"}), sp)
    assert out["3"].prompt == "Solve 2+2.\n<Solve 2+2.>\nName a colour.\n<Name a colour.>\nUse both."
    assert out["3"].start >= max(out["1"].end, out["2"].end) and out["3"].status == "ok"

def test_timeout_and_crash_are_reported_and_the_rest_return():
    sp = {"ok": Echo(), "crash": Echo(boom=True), "hang": Echo(delay=30)}
    plan = Plan("r", [Subtask("1", "a"), Subtask("2", "b"), Subtask("3", "c"), Subtask("4", "d", ["2"])], "rules")
    t = time.perf_counter()
    out = execute(plan, routes({"1": "ok", "2": "crash", "3": "hang", "4": "ok"}), sp, timeout=1.0)
    assert time.perf_counter() - t < 25                     # did not wait for the hanging call
    assert {i: p.status for i, p in out.items()} == {"1": "ok", "2": "failed", "3": "timeout", "4": "skipped"}
    assert out["1"].text == "<a>" and out["2"].error == "ValueError: weights exploded" and "1 s" in out["3"].error

def test_parallel_calls_overlap_and_serial_ones_do_not():
    for workers, overlap in ((2, True), (1, False)):
        sp = {"x": Echo(0.4), "y": Echo(0.4)}
        plan = Plan("r", [Subtask(str(i), f"t{i}") for i in range(1, 5)], "rules")
        out = execute(plan, routes({"1": "x", "2": "y", "3": "x", "4": "y"}), sp, workers=workers)
        (a0, a1, pa), (b0, b1, pb) = sp["x"].calls[0], sp["y"].calls[0]
        assert pa == ["t1", "t3"] and pb == ["t2", "t4"]            # one batched call per specialist
        assert (a0 < b1 and b0 < a1) == overlap, (workers, a0, a1, b0, b1)
        assert [out[str(i)].text for i in range(1, 5)] == ["<t1>", "<t2>", "<t3>", "<t4>"]


# ---- two tiny kit models trained on clearly different text ----------------------------------------------------------------

@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    "Generalist (mixed), 'digits' and 'letters' models: the tiny shape, byte tokens, a few hundred steps each."
    from sma_kit.backend import load_backend
    from sma_kit.generate import load_lm
    import random
    B, root, rng = load_backend("torch"), tmp_path_factory.mktemp("orch"), random.Random(0)
    digits = " ".join("".join(rng.choice("0123456789") for _ in range(rng.randint(2, 6))) for _ in range(4000))
    letters = " ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 6))) for _ in range(4000))
    shape = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=64, max_seq_len=32)
    lms = {}
    for name, text in (("general", digits[:8000] + "\n" + letters[:8000]), ("digits", digits), ("letters", letters)):
        (root / name / "data" / "general").mkdir(parents=True)
        (root / name / "data" / "general" / "t.txt").write_text(text)
        tc = TrainConfig(batch_size=16, seq_len=32, max_steps=250, lr=5e-3, warmup_steps=20, eval_every=250, seed=0)
        B.train_generalist(root / name / "data", root / name / "model", shape, tc, tokenizer="byte", device="cpu", overwrite=True, progress=False)
        lms[name] = LMSpecialist(name, load_lm(root / name / "model", name=name))
        lms[name].path = root / name / "model"
    return lms

def test_likelihood_and_classifier_routing_pick_the_right_model(two_models):
    specs = two_models
    tests = {"4821 99 310 5567 204 88 1930": "digits", "abc jihg fade bead cab hide": "letters", "907 3321 46 12 8064 55 71": "digits",
             "hij dab gefa cabe jid eh bag": "letters"}
    sub = [Subtask(str(i), t) for i, t in enumerate(tests)]
    r = route(sub, LikelihoodRouter(specs, "general"), "general")
    assert [x.specialist for x in r] == list(tests.values()) and all(x.confidence > 0.9 for x in r), [(x.specialist, x.scores) for x in r]
    train = ["12 345 6789", "55 0 13 987", "abc de fghij", "ja bic ed", "12 ab 34 cd", "e 5 f 6 g 7"]
    clf = fit_router(specs, "general", train, ["digits", "digits", "letters", "letters", "general", "general"])
    assert [x[0] for x in clf.propose(list(tests))] == list(tests.values())

def test_parallel_equals_serial_with_a_seed(two_models):
    o = lambda w: Orchestrator(two_models, "general", workers=w)
    req = "1. Write 4821 99 310 5567\n2. Write abc jihg fade bead\n3. Write 907 3321 46\n4. Write hij dab gefa cab"
    a, b = o(1).run(req, 24, temperature=0.9, seed=3), o(2).run(req, 24, temperature=0.9, seed=3)
    assert [r["specialist"] for r in a["routes"]] == ["digits", "letters", "digits", "letters"]
    assert [p["text"] for p in a["parts"]] == [p["text"] for p in b["parts"]] and a["answer"] == b["answer"]
    assert all(p["status"] == "ok" and p["batch"] == 2 for p in a["parts"])

def test_worker_processes_overlap_and_answer_as_in_process(two_models):
    from sma_kit.orchestrator_workers import WorkerSpecialist, ready_all, close_all
    specs = ready_all({n: WorkerSpecialist(n, m.path) for n, m in two_models.items()})
    try:
        assert len({s.pid for s in specs.values()} | {os.getpid()}) == 4
        plan = Plan("r", [Subtask(str(i), t) for i, t in enumerate(["12 34", "ab cd", "56 78", "ef gh"], 1)], "rules")
        rs = routes({"1": "digits", "2": "letters", "3": "digits", "4": "letters"})
        run = lambda sp, w: execute(plan, rs, sp, workers=w, max_new_tokens=96, temperature=0.9, seed=3)
        spans = {}
        for w in (1, 2):
            out = run(specs, w)
            spans[w] = (specs["digits"].span[:2], specs["letters"].span[:2])
            assert all(p.status == "ok" and p.batch == 2 for p in out.values())
        here = run(two_models, 1)
        assert [out[i].text for i in "1234"] == [here[i].text for i in "1234"]          # same sampled text as in this process
        (a0, a1), (b0, b1) = spans[2]
        assert a0 < b1 and b0 < a1, spans                    # two worker processes computed at the same time
        (a0, a1), (b0, b1) = spans[1]
        assert a1 <= b0 or b1 <= a0, spans                   # one at a time
        specs["letters"].proc.kill(); specs["letters"].proc.join(5)
        out = run(specs, 2)                                  # a dead worker: its parts fail, the others return
        assert [out[i].status for i in "1234"] == ["ok", "failed", "ok", "failed"] and "exited" in out["2"].error
    finally: close_all(specs)
    assert all(s.proc is None for s in specs.values())


def test_transformers_llama_specialist(two_models):
    transformers = pytest.importorskip("transformers")
    import torch
    from sma_kit.tokenizer import byte_tokenizer
    tok = byte_tokenizer()
    try:
        cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
        torch.manual_seed(0); model = transformers.LlamaForCausalLM(cfg).eval()
    except Exception as e:
        pytest.skip(f"a tiny Llama cannot be built here: {e}")
    hf = HFSpecialist("llama", model, tok)
    out = hf.complete(["abc", "12"], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    (ll, n), = hf.loglik(["abcd"])
    assert n == 4 and ll < 0
    tr = Orchestrator({**two_models, "llama": hf}, "general", router="rules", keywords={"llama": ["llama"]}).run("Say llama", 4)
    assert tr["routes"][0]["specialist"] == "llama" and tr["parts"][0]["status"] == "ok"


def test_manager_orchestrate_and_view(two_models, tmp_path):
    import shutil
    from sma_kit.manager import SpecialistManager
    from sma_kit.orchestrator import trace_text, orchestrate_view
    shutil.copytree(two_models["general"].path, tmp_path / "outputs" / "general")
    (tmp_path / "data" / "general").mkdir(parents=True); (tmp_path / "data" / "general" / "t.txt").write_text("12 ab " * 50)
    m = SpecialistManager(tmp_path, progress=False, log=None)
    tr = m.orchestrate("Write 12 34 56. Write abc def.", max_new_tokens=8)
    assert [r["specialist"] for r in tr["routes"]] == ["general", "general"] and all(p["status"] == "ok" for p in tr["parts"])
    assert "**Routes**" in trace_text(tr)
    with pytest.raises(SmaError, match="empty prompt"): m.orchestrate("  ")
    pytest.importorskip("ipywidgets")
    v = orchestrate_view(m, max_new_tokens=4)
    v.children[0].value = "Write 12."; v.children[1].click()
    assert "**Plan**" in v.children[2].value and "general" in v.children[2].value
    v.children[0].value = " "; v.children[1].click()
    assert "error: empty prompt" in v.children[2].value


# ---- endpoints and bad input -----------------------------------------------------------------------------------------------

def test_endpoint_specialist_in_an_orchestration(server):
    server.reply = lambda p: p[::-1]
    ep = HTTPSpecialist("remote", url(server), "tiny", timeout=10)
    tr = Orchestrator({"remote": ep, "other": ep}, "remote", router="rules", keywords={"other": ["other"]}).run("Say hi. Say other things.", 8)
    assert [r["specialist"] for r in tr["routes"]] == ["remote", "other"] and tr["parts"][0]["text"] == "Say hi."[::-1]
    assert server.requests[0][1]["model"] == "tiny" and server.requests[0][1]["max_tokens"] == 8

@pytest.mark.parametrize("args, msg", [
    (["--prompt", "hi", "--specialists", "a=http://127.0.0.1:9/v1#m", "--router", "rules", "--timeout", "3"], "cannot reach"),
    (["--prompt", "   ", "--specialists", "a=http://127.0.0.1:9/v1#m"], "empty prompt"),
    (["--prompt", "hi", "--specialists", "a=http://127.0.0.1:9/v1#m", "--generalist", "zz"], "unknown generalist"),
    (["--prompt", "hi", "--specialists", "a=/no/such/model"], "not found"),
    (["--prompt", "hi", "--specialists", "a=http://127.0.0.1:9/v1#m", "--planner_model", "nobody", "--planner", "lm"], "unknown specialist"),
])
def test_cli_bad_input_is_one_line(args, msg):
    r = run_cli("sma_orchestrate", *args, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], r.stderr

def test_cli_json_trace(server):
    server.reply = "fine"
    r = run_cli("sma_orchestrate", "--prompt", "Solve 1+1. Explain rates.", "--specialists", f"general={url(server)}#tiny", "--router", "rules", "--json")
    tr = json.loads(r.stdout)
    assert r.returncode == 0 and len(tr["plan"]["subtasks"]) == 2 and [p["text"] for p in tr["parts"]] == ["fine", "fine"]
