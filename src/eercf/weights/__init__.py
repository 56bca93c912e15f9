"""Weights in and out: the model factory (:func:`load_model`, names meaning pretrained weights,
training run folders), the checkpoint formats it reads (OpenAI, Hugging Face, the authors'),
conversion, and downloads of released CLIP weights."""
from .factory import convert, load_model, resolve, save_model

__all__ = ["convert", "load_model", "resolve", "save_model"]
