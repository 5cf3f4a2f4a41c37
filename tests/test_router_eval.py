"`sma_eval_lm --model_dir ROUTER_DIR` (mixture, selected member, member shares, members alone) and `sma_evaluate` over a router dir."
import json, math
import pytest
from conftest import run_cli, one_error_line

torch = pytest.importorskip("torch")
from sma_kit.tokenizer import byte_tokenizer
from sma_kit.torch.train import load_model, eval_domains
from sma_kit.torch.router import RouterEnsemble
from test_router import router_dir   # two tiny kit generalists gen and fin, and `router` (mix mode) over them


@pytest.fixture(scope="module")
def routers(router_dir):
    "`router_dir` plus `forced`: the router with fin's head at +inf, so fin takes every token."
    ens, _ = RouterEnsemble.from_pretrained(router_dir / "router", device="cpu")
    with torch.no_grad(): ens.heads[1][-1].bias.fill_(float("inf"))
    ens.save(router_dir / "forced")
    return router_dir


def test_eval_lm_router_table_and_json(routers, tiny_corpus, tmp_path):
    p = run_cli("sma_eval_lm", "--model_dir", routers / "router", "--data_dir", tiny_corpus, "--json", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    head = p.stdout.splitlines()[0]
    for col in ("mixture ppl", "selected ppl", "share gen", "share fin", "ppl gen", "ppl fin"): assert col in head, head
    assert sum(l.startswith("| general ") or l.startswith("| math ") for l in p.stdout.splitlines()) == 2, p.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["members"] == ["gen", "fin"] and set(res["domains"]) == {"general", "math"}
    for d, r in res["domains"].items():
        assert math.isclose(sum(r["share"].values()), 1.0, abs_tol=1e-12), (d, r["share"])
        assert r["val_loss"] <= max(m["val_loss"] for m in r["members"].values()) + 1e-9


def test_eval_lm_forced_router_equals_member(routers, tiny_corpus, tmp_path):
    "A head forced to +inf: mixture and selected perplexity are that member's `sma_eval_lm` / `eval_domains` figures."
    p = run_cli("sma_eval_lm", "--model_dir", routers / "forced", "--data_dir", tiny_corpus, "--json", tmp_path / "f.json", "--only_ensemble")
    q = run_cli("sma_eval_lm", "--model_dir", routers / "fin", "--data_dir", tiny_corpus, "--seq_len", 40, "--json", tmp_path / "m.json")
    assert p.returncode == 0 and q.returncode == 0, p.stderr + q.stderr
    assert "ppl fin" not in p.stdout and "share fin" in p.stdout
    got, want = json.loads((tmp_path / "f.json").read_text())["domains"], json.loads((tmp_path / "m.json").read_text())["domains"]
    own = eval_domains(load_model(routers / "fin", "cpu")[0], byte_tokenizer(), tiny_corpus, seq_len=40)
    for d, w in want.items():
        assert "members" not in got[d] and got[d]["share"] == {"gen": 0.0, "fin": 1.0} and got[d]["val_tokens"] == w["val_tokens"]
        for k in ("perplexity", "select_perplexity"): assert math.isclose(got[d][k], w["perplexity"], rel_tol=1e-6), (d, k, got[d][k], w)
        assert math.isclose(w["perplexity"], own[d]["perplexity"], rel_tol=1e-9)


def test_eval_lm_router_bad_input_is_one_line(routers, tiny_corpus):
    r = ("sma_eval_lm", "--model_dir", routers / "router", "--data_dir", tiny_corpus)
    one_error_line(run_cli(*r, "--backend", "jax"), "--backend torch")
    one_error_line(run_cli(*r, "--seq_len", 41), "window 40")
    one_error_line(run_cli(*r, "--routing", "hard"), "carry their own routing")
    one_error_line(run_cli("sma_eval_lm", "--model_dir", routers / "router"), "--data_dir")
    one_error_line(run_cli("sma_eval_lm", "--model_dir", routers / "gen", "--data_dir", tiny_corpus, "--only_ensemble"), "applies to a router dir")


# ------------------------------------------------------------------ sma_evaluate with a router dir
MEDQA = [("Which organ pumps blood?", {"A": "the heart", "B": "the liver", "C": "the kidney", "D": "the skin"}, "A"),
         ("Which vitamin is made in sunlight?", {"A": "vitamin C", "B": "vitamin D", "C": "vitamin K", "D": "vitamin B12"}, "B"),
         ("Which bone is in the thigh?", {"A": "femur", "B": "ulna", "C": "radius", "D": "skull 2"}, "A")]


@pytest.fixture(scope="module")
def medqa(tmp_path_factory):
    p = tmp_path_factory.mktemp("mq") / "medqa.jsonl"
    p.write_text("".join(json.dumps(dict(question=q, options=o, answer_idx=a)) + "\n" for q, o, a in MEDQA))
    return p


def test_evaluate_router_dir_with_members_and_decisions(routers, medqa, tmp_path):
    out = tmp_path / "out"
    p = run_cli("sma_evaluate", "--model_dirs", f"{routers / 'forced'},{routers / 'gen'}", "--datasets", "medqa", "--medqa_path", medqa,
                "--device", "cpu", "--output_dir", out, "--quiet")
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "results.json").read_text())
    labels = [m["label"] for m in res["models"]]
    assert labels == ["forced", "forced[gen]", "forced[fin]", "gen"] and res["models"][0]["kind"] == "router"
    r = res["results"]["medqa"]
    assert r["forced"]["accuracy"] == r["forced[fin]"]["accuracy"] and r["forced[gen]"]["accuracy"] == r["gen"]["accuracy"]
    dec = r["forced"]["decisions"]
    assert dec["all"]["share"] == {"gen": 0.0, "fin": 1.0} and dec["all"]["tokens"] > 0 and "digits" in dec and "words" in dec
    assert "decisions" not in r["forced[fin]"] and "decisions digits (" in p.stdout and "  all (" in p.stdout and (out / "plots" / "overview.png").is_file()
    q = run_cli("sma_evaluate", "--model_dirs", routers / "router", "--datasets", "medqa", "--medqa_path", medqa, "--device", "cpu",
                "--output_dir", tmp_path / "o2", "--quiet", "--no_plots", "--only_ensemble")
    assert q.returncode == 0, q.stderr
    r2 = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert [m["label"] for m in r2["models"]] == ["router"] and r2["config"]["only_ensemble"] is True
    assert math.isclose(sum(r2["results"]["medqa"]["router"]["decisions"]["all"]["share"].values()), 1.0)


def test_evaluate_router_gsm8k_decisions(routers, data_dir, tmp_path):
    p = run_cli("sma_evaluate", "--model_dirs", routers / "router", "--datasets", "gsm8k,pubmedqa", "--sample_size", 2, "--max_new_tokens", 8,
                "--gsm8k_shots", 0, "--device", "cpu", "--output_dir", tmp_path / "o", "--quiet", "--no_plots", "--only_ensemble", "--save_examples",
                env={"SMA_DATA_DIR": str(data_dir)})
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "o" / "results.json").read_text())["results"]
    for ds in ("gsm8k", "pubmedqa"):
        d = res[ds]["router"]["decisions"]
        assert d["all"]["tokens"] > 0 and math.isclose(sum(d["all"]["share"].values()), 1.0)
        assert sum(v["tokens"] for k, v in d.items() if k != "all") == d["all"]["tokens"]
    ex = [json.loads(l) for l in (tmp_path / "o" / "examples" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(ex) == 2 and all(e["marked"].startswith(("[gen]", "[fin]")) for e in ex), ex


def test_evaluate_bad_router_dir_is_one_line(routers, medqa, tmp_path):
    bad = tmp_path / "bad"; bad.mkdir(); (bad / "router.json").write_text("{not json")
    one_error_line(run_cli("sma_evaluate", "--model_dirs", bad, "--datasets", "medqa", "--medqa_path", medqa, "--output_dir", tmp_path / "o"),
                   "router.json", "not valid JSON")
