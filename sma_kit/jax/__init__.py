"""The JAX/Flax backend: every name of `sma_kit.backend.API`, with the same signatures as `sma_kit.torch` (hand-written)."""
from .model import DecoderLM, complete, loglik
from .shift import ShiftableLM, routing_report, gate_weights
from .train import train_generalist, train_specialists, load_model, save_model, eval_domains
from . import router   # the router ensemble over kit JAX members (`load_backend("jax").router`)

__all__ = ["train_generalist", "train_specialists", "load_model", "save_model", "eval_domains", "complete", "loglik",
           "routing_report", "gate_weights", "DecoderLM", "ShiftableLM"]
