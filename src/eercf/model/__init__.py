"""The model: CLIP towers, the temporal block, the text-gated interaction block, the five
similarities and the loss, plus the video transform a model carries. Plain PyTorch; it
imports nothing else of eercf but ``errors``."""
from .eercf import EERCF
from .features import VideoFeatures
from .loss import LossWeights
from .similarity import LEVELS
from .tib import Temperatures
from .transform import VideoTransform

__all__ = ["EERCF", "VideoFeatures", "LossWeights", "LEVELS", "Temperatures", "VideoTransform"]
