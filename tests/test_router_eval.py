"`sma_eval_lm --model_dir ROUTER_DIR`: the per-domain table of the mixture, the selected member, member shares and members."
import json, math
import pytest
from conftest import run_cli, one_error_line

torch = pytest.importorskip("torch")
from sma_kit.config import ModelConfig
from sma_kit.tokenizer import byte_tokenizer
from sma_kit.torch.model import DecoderLM
from sma_kit.torch.train import save_model, load_model, eval_domains
from sma_kit.torch.router import RouterEnsemble


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):
    "Two tiny kit generalists (byte tokenizer); `router` has fresh heads, `forced` hands every token to `fin`."
    root, tok = tmp_path_factory.mktemp("router"), byte_tokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, ffn_dim=64, max_seq_len=40)
    for seed, name in enumerate(["gen", "fin"]):
        torch.manual_seed(seed); save_model(DecoderLM(cfg), root / name, tok)
    ens, _ = RouterEnsemble.from_pretrained([str(root / "gen"), str(root / "fin")], device="cpu", head_hidden_dim=8)
    ens.save(root / "router")
    with torch.no_grad(): ens.heads[1][-1].bias.fill_(float("inf"))
    ens.save(root / "forced")
    return root


def test_eval_lm_router_table_and_json(router_dir, tiny_corpus, tmp_path):
    p = run_cli("sma_eval_lm", "--model_dir", router_dir / "router", "--data_dir", tiny_corpus, "--json", tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    head = p.stdout.splitlines()[0]
    for col in ("mixture ppl", "selected ppl", "share gen", "share fin", "ppl gen", "ppl fin"): assert col in head, head
    assert sum(l.startswith("| general ") or l.startswith("| math ") for l in p.stdout.splitlines()) == 2, p.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["members"] == ["gen", "fin"] and set(res["domains"]) == {"general", "math"}
    for d, r in res["domains"].items():
        assert math.isclose(sum(r["share"].values()), 1.0, abs_tol=1e-12), (d, r["share"])
        assert r["val_loss"] <= max(m["val_loss"] for m in r["members"].values()) + 1e-9


def test_eval_lm_forced_router_equals_member(router_dir, tiny_corpus, tmp_path):
    "A head forced to +inf: mixture and selected perplexity are that member's `sma_eval_lm` / `eval_domains` figures."
    p = run_cli("sma_eval_lm", "--model_dir", router_dir / "forced", "--data_dir", tiny_corpus, "--json", tmp_path / "f.json", "--only_ensemble")
    q = run_cli("sma_eval_lm", "--model_dir", router_dir / "fin", "--data_dir", tiny_corpus, "--seq_len", 40, "--json", tmp_path / "m.json")
    assert p.returncode == 0 and q.returncode == 0, p.stderr + q.stderr
    assert "ppl fin" not in p.stdout and "share fin" in p.stdout
    got, want = json.loads((tmp_path / "f.json").read_text())["domains"], json.loads((tmp_path / "m.json").read_text())["domains"]
    own = eval_domains(load_model(router_dir / "fin", "cpu")[0], byte_tokenizer(), tiny_corpus, seq_len=40)
    for d, w in want.items():
        assert "members" not in got[d] and got[d]["share"] == {"gen": 0.0, "fin": 1.0} and got[d]["val_tokens"] == w["val_tokens"]
        for k in ("perplexity", "select_perplexity"): assert math.isclose(got[d][k], w["perplexity"], rel_tol=1e-6), (d, k, got[d][k], w)
        assert math.isclose(w["perplexity"], own[d]["perplexity"], rel_tol=1e-9)


def test_eval_lm_router_bad_input_is_one_line(router_dir, tiny_corpus):
    r = ("sma_eval_lm", "--model_dir", router_dir / "router", "--data_dir", tiny_corpus)
    one_error_line(run_cli(*r, "--backend", "jax"), "--backend torch")
    one_error_line(run_cli(*r, "--seq_len", 41), "window 40")
    one_error_line(run_cli(*r, "--routing", "hard"), "carry their own routing")
    one_error_line(run_cli("sma_eval_lm", "--model_dir", router_dir / "router"), "--data_dir")
    one_error_line(run_cli("sma_eval_lm", "--model_dir", router_dir / "gen", "--data_dir", tiny_corpus, "--only_ensemble"), "applies to a router dir")
