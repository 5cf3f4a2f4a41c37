"""The PyTorch backend: every name of `sma_kit.backend.API`, with the same signatures as `sma_kit.jax` (hand-written)."""
from .model import DecoderLM, complete, loglik
from .shift import ShiftableLM, routing_report, gate_weights
from .train import train_generalist, train_specialists, load_model, save_model, eval_domains
from . import xla   # registers the XLA device and trainer with `train` (torch_xla itself is imported only when used)
from . import router   # the router ensemble (`load_backend("torch").router`; transformers is imported only for hf: members)
from . import router_eval   # per-domain perplexity of a router (`sma_eval_lm --model_dir ROUTER_DIR`)

__all__ = ["train_generalist", "train_specialists", "load_model", "save_model", "eval_domains", "complete", "loglik",
           "routing_report", "gate_weights", "DecoderLM", "ShiftableLM"]
