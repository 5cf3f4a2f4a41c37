"""The JAX/Flax path: causality and KV cache, one checkpoint format with PyTorch (both ways, bitwise),
sharded training on 8 simulated CPU devices equal to one device, exact orbax resume, and bad input."""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import json
from pathlib import Path
import numpy as np
import pytest

# 8 simulated CPU devices: XLA reads the flag when jax first initialises its backend; set it only for that
# moment, so the CLI subprocesses of other test files still see the usual single CPU device
_flags = os.environ.get("XLA_FLAGS")
os.environ["XLA_FLAGS"] = (_flags or "") + " --xla_force_host_platform_device_count=8"
jax = pytest.importorskip("jax")
jax.devices("cpu")
if _flags is None: del os.environ["XLA_FLAGS"]
else: os.environ["XLA_FLAGS"] = _flags
import jax.numpy as jnp
from flax import nnx
from sma_kit.config import preset, TrainConfig, SmaError
from sma_kit.checkpoint import WEIGHTS, TRAIN_STATE, read_safetensors_header
from sma_kit.data import token_stream, split_stream, MixtureSampler
from sma_kit.tokenizer import byte_tokenizer
from sma_kit.jax.model import DecoderLM, state_dict, load_state_dict, generate
from sma_kit.jax.mesh import make_mesh, sharded_model, check_batch
from sma_kit.jax.train import Trainer, load_model, save_model, eval_loss, orbax_steps, train_generalist

CPU = jax.devices("cpu")
TOK = byte_tokenizer(["general", "math"])
TEXT = "".join(f"{i} little pigs went to market and {i % 7} came home.\n" for i in range(400))
TRAIN, VAL = split_stream(token_stream([TEXT], TOK), 0.1)
CFG = preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=32)
fwd = nnx.jit(lambda m, x: m(x))


def test_eight_devices():
    assert len(CPU) >= 8, "XLA_FLAGS must give 8 CPU devices before jax is imported (run this file on its own or first)"


def trainer(out, mesh, model=None, **kw):
    tc = TrainConfig(**{"batch_size": 8, "seq_len": 32, "lr": 3e-3, "warmup_steps": 5, "max_steps": 40, "eval_every": 5,
                        "log_every": 1, "seed": 0, **kw})
    return Trainer(model or sharded_model(CFG, mesh), TOK, MixtureSampler({"general": TRAIN}, 32, seed=0), {"general": VAL},
                   tc, out, mesh, progress=False)


def losses(out):
    return [json.loads(l)["train_loss"] for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_causality_and_kv_cache():
    m = DecoderLM(preset("tiny"), 0)
    idx = jax.random.randint(jax.random.key(0), (2, 20), 0, 512)
    full = fwd(m, idx)
    for t in (0, 9, 18):
        b = fwd(m, idx.at[:, t + 1].set((idx[:, t + 1] + 1) % 512))
        assert np.allclose(full[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=0) and not np.allclose(full[:, t + 1], b[:, t + 1])
    cache = m.new_cache(2)
    lg, cache = m(idx[:, :6], cache=cache, pos=0); parts = [lg]
    for t in range(6, 20):
        lg, cache = m(idx[:, t : t + 1], cache=cache, pos=t); parts.append(lg)
    assert float(jnp.abs(jnp.concatenate(parts, 1) - full).max()) < 1e-5
    g = np.asarray(generate(m, np.asarray(idx[:1, :5]), 8))   # greedy = argmax of the full forward at every step
    seq = np.concatenate([np.asarray(idx[:1, :5]), g], 1)
    assert np.array_equal(g, np.asarray(fwd(m, jnp.asarray(seq))[:, 4:-1].argmax(-1)))


def test_torch_jax_torch_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    from sma_kit.torch.model import DecoderLM as TorchLM
    from sma_kit.torch.train import save_model as torch_save, load_model as torch_load
    torch.manual_seed(0)
    tm = TorchLM(CFG.replace(tie_embeddings=False)).eval()
    torch_save(tm, tmp_path / "pt", TOK)
    jm, tok = load_model(tmp_path / "pt")
    ids = np.random.default_rng(0).integers(0, TOK.vocab_size, (3, 32))
    with torch.no_grad(): tl = tm(torch.from_numpy(ids)).numpy()
    assert np.abs(np.asarray(fwd(jm, jnp.asarray(ids))) - tl).max() < 1e-4
    save_model(jm, tmp_path / "jx", tok)
    assert read_safetensors_header(tmp_path / "pt" / WEIGHTS) == read_safetensors_header(tmp_path / "jx" / WEIGHTS)
    tm2, _ = torch_load(tmp_path / "jx")
    for (k, a), (_, b) in zip(tm.state_dict().items(), tm2.state_dict().items()):
        assert a.dtype == b.dtype and a.numpy().tobytes() == b.numpy().tobytes(), k
    jm2 = DecoderLM(CFG, 3)                      # and JAX weights drive the PyTorch model to the same logits
    tm3 = TorchLM(CFG).eval(); tm3.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict(jm2).items()})
    with torch.no_grad(): tl3 = tm3(torch.from_numpy(ids)).numpy()
    assert np.abs(np.asarray(fwd(jm2, jnp.asarray(ids))) - tl3).max() < 1e-4


def test_sharded_training_equals_one_device(tmp_path):
    one, mesh = make_mesh("1,1", CPU), make_mesh("2,4", CPU)
    t1 = trainer(tmp_path / "one", one, stop_after=10); t1.fit()
    t8 = trainer(tmp_path / "eight", mesh, stop_after=10); t8.fit()
    l1, l8 = losses(tmp_path / "one"), losses(tmp_path / "eight")
    assert len(l1) == 10 and np.abs(np.array(l1) - np.array(l8)).max() < 1e-4, (l1, l8)
    assert abs(eval_loss(t1.model, VAL, 32) - eval_loss(t8.model, VAL, 32, mesh=mesh)) < 1e-4
    for path, v in nnx.to_flat_state(nnx.state(t8.model, nnx.Param)):
        a = v[...]
        assert len(a.addressable_shards) == 8 and {s.device for s in a.addressable_shards} == set(CPU)
        if a.ndim == 2:   # every matrix is fsdp-sharded: each device holds a quarter
            assert all(s.data.size * 4 == a.size for s in a.addressable_shards), path


def test_orbax_resume_equals_uninterrupted(tmp_path):
    mesh = make_mesh("2,4", CPU)
    straight = trainer(tmp_path / "s", mesh, stop_after=10); straight.fit()
    first = trainer(tmp_path / "r", mesh, stop_after=5).fit()
    assert first["interrupted"] and orbax_steps(tmp_path / "r" / TRAIN_STATE) == [5]
    resumed = trainer(tmp_path / "r", mesh, stop_after=10); resumed.fit(resume=True)
    a, b = state_dict(straight.model), state_dict(resumed.model)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert losses(tmp_path / "r") == losses(tmp_path / "s")
    other = trainer(tmp_path / "r", make_mesh("1,8", CPU), stop_after=10)   # the same state restored onto another mesh
    other.fit(resume=True, resume_step=5)
    c = state_dict(other.model)
    assert max(np.abs(a[k] - c[k]).max() for k in a) < 1e-5


def one_line(fn, msg):
    with pytest.raises(SmaError) as e: fn()
    assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_bad_input(tmp_path):
    one_line(lambda: make_mesh("3,2", CPU), "--mesh 3,2 needs 6 devices, which does not divide the 8 available cpu devices")
    one_line(lambda: make_mesh("four", CPU), "--mesh 'four'")
    one_line(lambda: check_batch(12, make_mesh("2,4", CPU)), "--batch_size 12 is not divisible by the 8 devices")
    one_line(lambda: trainer(tmp_path / "b", make_mesh("1,8", CPU), batch_size=4), "--batch_size 4 is not divisible")
    one = make_mesh("1,1", CPU)
    trainer(tmp_path / "t", one, stop_after=5).fit()
    one_line(lambda: trainer(tmp_path / "t", one).fit(resume=True, resume_step=7), "no training state for step 7 (saved steps: 5)")
    wide = sharded_model(CFG.replace(ffn_dim=64), one)
    one_line(lambda: trainer(tmp_path / "t", one, model=wide).fit(resume=True), "training state is for a different model config")
    one_line(lambda: trainer(tmp_path / "none", one).fit(resume=True), "nothing to resume")
    data = tmp_path / "data"; (data / "general").mkdir(parents=True); (data / "general" / "p.txt").write_text(TEXT)
    one_line(lambda: train_generalist(data, tmp_path / "g", tc=TrainConfig(batch_size=6, seq_len=32, max_steps=2), tokenizer="byte",
                                      device="cpu", mesh="2,4", progress=False), "--batch_size 6 is not divisible by the 8 devices")
    assert not (tmp_path / "g").exists()


def test_train_generalist_on_a_mesh(tmp_path):
    data = tmp_path / "data"; (data / "general").mkdir(parents=True); (data / "general" / "p.txt").write_text(TEXT)
    (data / "math").mkdir(); (data / "math" / "q.txt").write_text("1 + 1 = 2\n" * 100)
    tc = TrainConfig(batch_size=8, seq_len=32, lr=3e-3, warmup_steps=5, max_steps=40, eval_every=5, log_every=1, seed=0)
    r = train_generalist(data, tmp_path / "g", dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128), tc,
                         tokenizer="byte", device="cpu", mesh="2,4", progress=False, overwrite=True)
    assert r["step"] == 40 and r["best_val_loss"] < 3.0 and {"n_params", "train_tokens", "val_tokens", "domain"} <= set(r)
    torch = pytest.importorskip("torch")
    from sma_kit.torch.train import load_model as torch_load, eval_loss as torch_eval
    tm, tok = torch_load(tmp_path / "g")     # the PyTorch side reads the JAX model and measures the same loss
    assert abs(torch_eval(tm, split_stream(token_stream([TEXT], tok), 0.1)[1], 32) - r["best_val_loss"]) < 1e-4


def test_same_training_as_pytorch(tmp_path):
    "The same initial weights and batches: ten JAX steps track ten PyTorch steps (AdamW, clipping, schedule, decay mask)."
    torch = pytest.importorskip("torch")
    from sma_kit.torch.model import DecoderLM as TorchLM
    from sma_kit.torch.train import Trainer as TorchTrainer
    torch.manual_seed(0)
    tm = TorchLM(CFG)
    jm = load_state_dict(DecoderLM(CFG, 0), {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    tc = dict(batch_size=8, seq_len=32, lr=3e-3, warmup_steps=5, max_steps=40, eval_every=5, log_every=1, seed=0, stop_after=10)
    TorchTrainer(tm, TOK, MixtureSampler({"general": TRAIN}, 32, seed=0), {"general": VAL}, TrainConfig(**tc), tmp_path / "pt", "cpu",
                 progress=False).fit()
    trainer(tmp_path / "jx", make_mesh("1,1", CPU), model=jm, stop_after=10).fit()
    lt, lj = losses(tmp_path / "pt"), losses(tmp_path / "jx")
    assert len(lt) == 10 and np.abs(np.array(lt) - np.array(lj)).max() < 1e-3, (lt, lj)


def _torch_shiftable(branch="copy", site="attention", seed=1):
    "A PyTorch shiftable model with 2 specialists whose branches and gates are perturbed (so the experts differ)."
    torch = pytest.importorskip("torch")
    from sma_kit.torch.model import DecoderLM as TorchLM
    from sma_kit.torch.shift import ShiftableLM as TorchShift
    torch.manual_seed(seed)
    tm = TorchShift.from_base_model(TorchLM(CFG), ["math", "code"], expert_site=site, branch=branch)
    with torch.no_grad():
        for p in tm.parameters():
            if p.requires_grad: p.add_(torch.randn_like(p) * 0.05)
    return tm.eval()


@pytest.mark.parametrize("branch,site", [("copy", "attention"), ("lora", "both")])
def test_shiftable_checkpoint_both_ways(tmp_path, branch, site):
    "A PyTorch shiftable model directory loads in JAX with the same logits in every routing mode; saved from JAX it is the same file."
    torch = pytest.importorskip("torch")
    from sma_kit.torch.train import save_model as torch_save, load_model as torch_load
    from sma_kit.jax.shift import ShiftableLM
    tm = _torch_shiftable(branch, site)
    torch_save(tm, tmp_path / "pt", TOK)
    jm, tok = load_model(tmp_path / "pt")
    assert isinstance(jm, ShiftableLM) and jm.experts == ["base", "math", "code"] and jm.sc.branch == branch
    ids = np.random.default_rng(0).integers(0, TOK.vocab_size, (3, 32))
    for mode, k in (("soft", 1), ("topk", 1), ("topk", 2), ("hard", 1)):
        tm.set_routing(mode, k); jm.set_routing(mode, k)
        with torch.no_grad(): tl = tm(torch.from_numpy(ids)).numpy()
        assert np.abs(np.asarray(fwd(jm, jnp.asarray(ids))) - tl).max() < 1e-4, mode
    jm.set_routing("soft", 1)
    save_model(jm, tmp_path / "jx", tok)
    assert read_safetensors_header(tmp_path / "pt" / WEIGHTS) == read_safetensors_header(tmp_path / "jx" / WEIGHTS)
    assert json.loads((tmp_path / "jx" / "specialists.json").read_text()) == json.loads((tmp_path / "pt" / "specialists.json").read_text())
    tm2, _ = torch_load(tmp_path / "jx")
    for (k, a), (_, b) in zip(tm.state_dict().items(), tm2.state_dict().items()):
        assert a.numpy().tobytes() == b.numpy().tobytes(), k
    # a generalist saved over it drops specialists.json; a mismatched specialists.json is refused with one line
    (tmp_path / "jx" / "specialists.json").write_text(json.dumps({"specialists": ["math"], "branch": branch, "expert_site": site}))
    one_line(lambda: load_model(tmp_path / "jx"), "tensors do not match the model")
    save_model(DecoderLM(CFG, 0), tmp_path / "jx", tok)
    assert not (tmp_path / "jx" / "specialists.json").exists() and not isinstance(load_model(tmp_path / "jx")[0], ShiftableLM)


def _domain_batches():
    "A domain-labelled sampler over general text and two specialist corpora."
    math = split_stream(token_stream(["1 + 1 = 2, 2 + 3 = 5\n" * 120], TOK), 0.1)[0]
    code = split_stream(token_stream(["def f(x):\n    return x + 1\n" * 80], TOK), 0.1)[0]
    return MixtureSampler({"general": TRAIN, "math": math, "code": code}, 32, {"general": 1, "math": 1, "code": 1}, seed=0)


def test_shiftable_training_tracks_pytorch(tmp_path):
    "The same shiftable weights and batches: ten JAX steps of shift_loss track ten PyTorch steps; the base stays frozen in both."
    torch = pytest.importorskip("torch")
    from functools import partial
    from sma_kit.config import expert_ids
    from sma_kit.torch.train import Trainer as TorchTrainer
    from sma_kit.torch.shift import shift_loss, expert_targets
    from sma_kit.jax.shift import ShiftableLM, shift_loss_fn
    tm = _torch_shiftable("lora", "both").train()
    jm = load_state_dict(ShiftableLM(CFG, tm.sc, 0), {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    before = state_dict(jm)
    doms = ["general", "math", "code"]
    tc = TrainConfig(batch_size=8, seq_len=32, lr=3e-3, warmup_steps=5, max_steps=40, eval_every=5, log_every=1, seed=0, stop_after=10)
    TorchTrainer(tm, TOK, _domain_batches(), {"general": VAL}, tc, tmp_path / "pt", "cpu", progress=False,
                 loss_fn=partial(shift_loss, targets=expert_targets(doms, tm.experts))).fit()
    Trainer(jm, TOK, _domain_batches(), {"general": VAL}, tc, tmp_path / "jx", make_mesh("1,1", CPU), progress=False,
            loss_fn=shift_loss_fn(expert_ids(doms, jm.experts)), wrt=jm.trainable()).fit()
    rt, rj = ([json.loads(l) for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("pt", "jx"))
    assert len(rt) == len(rj) == 10
    for key in ("train_loss", "lm_loss", "lb_loss", "gate_loss"):
        assert np.abs(np.array([r[key] for r in rt]) - np.array([r[key] for r in rj])).max() < 1e-3, key
    after, tsd = state_dict(jm), {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    for k in before:
        moved = not np.array_equal(before[k], after[k])
        assert moved == (("_experts." in k) or (".gate." in k)), k          # only branches and gates train
        assert np.abs(after[k] - tsd[k]).max() < 1e-3, k


def test_shiftable_training_on_a_mesh_equals_one_device(tmp_path):
    "Branches and gates sharded over a (2, 4) mesh: the same losses as on one device."
    pytest.importorskip("torch")
    from sma_kit.config import expert_ids
    from sma_kit.jax.shift import ShiftableLM, shift_loss_fn
    sd = {k: v.detach().numpy().copy() for k, v in _torch_shiftable("copy", "both").state_dict().items()}
    sc = _torch_shiftable("copy", "both").sc
    tc = TrainConfig(batch_size=8, seq_len=32, lr=3e-3, warmup_steps=5, max_steps=40, eval_every=5, log_every=1, seed=0, stop_after=6)
    for name, mesh in (("one", make_mesh("1,1", CPU)), ("eight", make_mesh("2,4", CPU))):
        m = load_state_dict(ShiftableLM(CFG, sc, 0), sd)
        Trainer(m, TOK, _domain_batches(), {"general": VAL}, tc, tmp_path / name, mesh, progress=False,
                loss_fn=shift_loss_fn(expert_ids(["general", "math", "code"], m.experts)), wrt=m.trainable()).fit()
    l1, l8 = losses(tmp_path / "one"), losses(tmp_path / "eight")
    assert len(l1) == 6 and np.abs(np.array(l1) - np.array(l8)).max() < 1e-4, (l1, l8)
    k = m.blocks[0].ffn_experts["math"].mod.gate_up_proj.kernel[...]
    assert all(s.data.size * 4 == k.size for s in k.addressable_shards)


def test_train_specialists_on_a_mesh(tmp_path):
    "train_specialists builds the shiftable model in its shards on a (2, 4) mesh and trains it as on one device."
    from sma_kit.jax.train import train_specialists
    data = tmp_path / "data"; (data / "general").mkdir(parents=True); (data / "general" / "p.txt").write_text(TEXT)
    (data / "math").mkdir(); (data / "math" / "q.txt").write_text("1 + 1 = 2, 2 + 3 = 5\n" * 100)
    tc = TrainConfig(batch_size=8, seq_len=32, lr=3e-3, warmup_steps=2, max_steps=6, eval_every=3, log_every=1, seed=0)
    train_generalist(data, tmp_path / "g", dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128), tc, tokenizer="byte",
                     device="cpu", mesh="1,1", progress=False)
    runs = {m: train_specialists(tmp_path / "g", tmp_path / f"s{m[0]}{m[2]}", data, tc=tc, shift=dict(expert_site="both"), device="cpu",
                                 mesh=m, progress=False) for m in ("1,1", "2,4")}
    assert abs(runs["1,1"]["best_val_loss"] - runs["2,4"]["best_val_loss"]) < 1e-4, runs
    assert losses(tmp_path / "s11") != [] and np.abs(np.array(losses(tmp_path / "s11")) - np.array(losses(tmp_path / "s24"))).max() < 1e-4
    a, b = state_dict(load_model(tmp_path / "s11")[0]), state_dict(load_model(tmp_path / "s24")[0])
    assert max(np.abs(a[k] - b[k]).max() for k in a) < 1e-4
