"A router dir through the text-level entry points: `load_lm` / `TextLM` and `sma_generate --model_dir ROUTER_DIR`, both backends."
import json
import pytest
from conftest import run_cli, one_error_line

torch = pytest.importorskip("torch")
from sma_kit.config import ModelConfig, SmaError
from sma_kit.generate import load_lm
from sma_kit.tokenizer import byte_tokenizer
from sma_kit.torch.model import DecoderLM
from sma_kit.torch.train import save_model
from sma_kit.torch import router as R


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):
    "A router over two tiny kit generalists (the byte tokenizer), heads fresh, saved in mix mode."
    root, tok = tmp_path_factory.mktemp("router"), byte_tokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=4, ffn_dim=64, max_seq_len=40)
    for seed, name in enumerate(["gen", "fin"]):
        torch.manual_seed(seed); save_model(DecoderLM(cfg), root / name, tok)
    ens, _ = R.RouterEnsemble.from_pretrained([str(root / "gen"), str(root / "fin")], device="cpu", head_hidden_dim=8, mode="mix")
    ens.save(root / "router")
    return root


def test_load_lm_takes_a_router_dir(router_dir):
    lm = load_lm(router_dir / "router")
    assert isinstance(lm.model, R.RouterEnsemble) and lm.window == 40 and lm.name == "router" and lm.model.mode == "mix"
    got = lm.complete(["The cat", "A"], 10, temperature=0, stop=[])
    want = R.complete(lm.model, lm.tok, ["The cat", "A"], 10, temperature=0, stop=[])
    assert [c.text for c in got] == [c.text for c in want] and all(len(c.members) == len(c.ids) for c in got)
    assert lm.loglik([("The cat", " sat")]) == R.loglik(lm.model, lm.tok, [("The cat", " sat")])
    with pytest.raises(SmaError, match="carry their own routing"): load_lm(router_dir / "router", force_expert="base")
    jl = load_lm(router_dir / "router", backend="jax")      # kit members: the JAX router, same greedy text
    assert type(jl.model).__name__ == "JaxRouter" and jl.model.mode == "mix" and jl.window == 40
    assert [c.text for c in jl.complete(["The cat", "A"], 10, temperature=0, stop=[])] == [c.text for c in want]


def test_sma_generate_takes_a_router_dir(router_dir):
    args = ("sma_generate", "--model_dir", router_dir / "router", "--prompt", "The cat", "--temperature", 0, "--max_new_tokens", 8)
    mix, sel = run_cli(*args), run_cli(*args, "--mode", "select")
    assert mix.returncode == 0 and sel.returncode == 0, mix.stderr + sel.stderr
    lm = load_lm(router_dir / "router")
    for p, mode in ((mix, "mix"), (sel, "select")):
        want = R.complete(lm.model, lm.tok, "The cat", 8, temperature=0, mode=mode, top_k=50)[0]
        assert p.stdout == "The cat" + want.text + "\n", (mode, p.stdout)
    one_error_line(run_cli(*args, "--mode", "vote"), "mode must be select or mix")
    one_error_line(run_cli("sma_generate", "--model_dir", router_dir / "gen", "--prompt", "x", "--mode", "mix"), "--mode applies to a router dir")
    for p, mode in ((mix, "mix"), (sel, "select")):          # the JAX backend prints the same greedy text
        j = run_cli(*args, "--mode", mode, "--backend", "jax")
        assert j.returncode == 0 and j.stdout == p.stdout, (mode, j.stdout, j.stderr)


def test_jax_refuses_a_router_with_an_hf_member(router_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=byte_tokenizer().vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, max_position_embeddings=64)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    ens, _ = R.RouterEnsemble.from_pretrained([str(router_dir / "gen"), f"hf:{tmp_path / 'llama'}"], device="cpu", head_hidden_dim=8)
    ens.save(tmp_path / "router_hf")
    assert load_lm(tmp_path / "router_hf").model.names == ["gen", "llama"]     # PyTorch takes it
    one_error_line(run_cli("sma_generate", "--model_dir", tmp_path / "router_hf", "--prompt", "x", "--backend", "jax"),
                   "router member llama", "hf:", "PyTorch backend")


def test_sma_generate_bad_router_dir_is_one_line(router_dir, tmp_path):
    bad = tmp_path / "bad"; bad.mkdir()
    info = json.loads((router_dir / "router" / "router.json").read_text())
    (bad / "router.json").write_text(json.dumps({**info, "members": [str(router_dir / "gen"), str(tmp_path / "gone")]}))
    one_error_line(run_cli("sma_generate", "--model_dir", bad, "--prompt", "x"), "router member gone", "not found")
    (bad / "router.json").write_text(json.dumps(info))
    (bad / "router.safetensors").write_bytes(b"junk")
    one_error_line(run_cli("sma_generate", "--model_dir", bad, "--prompt", "x"), "router.safetensors")
