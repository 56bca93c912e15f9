"""Evaluation apart from training: the metrics of the multi-caption protocol (``metrics``) and
the one evaluator (``evaluator``: encode a split with the model's transform, score the three
retrieval modes), used by training validation and ``eercf eval`` alike."""
from .evaluator import MODES, EncodedSet, encode_records, score_modes
from .metrics import multi_caption_metrics, retrieval_metrics

__all__ = ["MODES", "EncodedSet", "encode_records", "score_modes", "multi_caption_metrics",
           "retrieval_metrics"]
