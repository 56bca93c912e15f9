"""The synthetic text-video benchmark: what each video shows and how it is captioned
(``scenes``: the vocabulary, ``plan``, ``annotate``, ``fits``), how it is drawn (``render``),
and the benchmark on disk (``benchmark``)."""
from .benchmark import contact_sheet, make_synthetic, read_meta, read_truth
from .scenes import SynthVideo

__all__ = ["contact_sheet", "make_synthetic", "read_meta", "read_truth", "SynthVideo"]
