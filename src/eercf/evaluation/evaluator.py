"""The evaluator: a dataset split encoded with the model's transform, then scored in the three
retrieval modes of EERCF; training validation and ``eercf eval`` both run this.

Modes, all scored on ``VideoFeatures.as_stored()`` so evaluation and the index agree bit for bit:
- ``video``: stage 1 alone, ``S_v = s * (t W_g) . v``;
- ``two_stage``: stage 1 recalls the top K, only those K are re-scored with the fused score
  (``eercf.similarity`` through ``model.rerank``, the code the search engine runs) and ranked
  above all others; the rest keep their stage-1 order;
- ``all_pairs``: the fused score for every pair (``model.similarity`` + ``fuse``).
Optional ``+dsl`` variants apply the dual softmax over the query set (transductive).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from ..errors import EercfError
from ..model.similarity import fuse
from .metrics import apply_dual_softmax, multi_caption_metrics

if TYPE_CHECKING:
    from ..data.datasets import VideoRecord
    from ..index.codecs import PQCodec
    from ..model import EERCF, VideoFeatures, VideoTransform

MODES = ("video", "two_stage", "two_stage_paper", "all_pairs")
_GATHER_BUDGET = 128 << 20  # bytes of candidate features gathered at once in stage 2


# ----------------------------------------------------------------------------- scoring

def stage1_scores(model: "EERCF", text: torch.Tensor, videos: "VideoFeatures") -> torch.Tensor:
    """Stage-1 logits ``[T, V]``: ``s * q . v`` with ``q = t W_g``, the one inner product the
    index's ANN search serves."""
    return model.logit_scale * (model.stage1_query(text) @ videos.video.float().T)


def all_pairs_scores(model: "EERCF", text: torch.Tensor, videos: "VideoFeatures",
                     weights: dict | None = None) -> torch.Tensor:
    """The fused score ``[T, V]`` of every pair (what two-stage retrieval avoids computing)."""
    return fuse(model.similarity(text, videos), model.fusion_weights(weights))


def two_stage_scores(model: "EERCF", text: torch.Tensor, videos: "VideoFeatures", topk: int,
                     weights: dict | None = None, *, stage1: torch.Tensor | None = None,
                     codec: "PQCodec | None" = None, exact_candidates: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-to-video two-stage ranking as ``(scores [T, V], promoted [T, V])``: each query's
    top ``topk`` videos by stage 1 carry their fused score and are promoted above all other
    videos, which keep their stage-1 score. As in the search engine, only the candidates'
    features are gathered (in query chunks of bounded memory) and scored by ``model.rerank``;
    with a pq ``codec``, through it, as search scores a pq-coded index, reading
    ``exact_candidates`` whole (default: search's at k = 10, ``codecs.EXACT_CANDIDATES``)."""
    if stage1 is None:
        stage1 = stage1_scores(model, text, videos)
    k = min(topk, len(videos))
    candidates = stage1.topk(k, dim=1).indices                             # [T, k]
    fused = torch.empty(candidates.shape, device=stage1.device)
    weights = model.fusion_weights(weights)
    if codec is not None:
        return _promote(stage1, candidates, _coded_rerank(model, text, videos, candidates,
                                                          weights, codec, exact_candidates))
    step = queries_per_chunk(videos, k)
    gather = CandidateGather(videos, min(step, len(text)) * k)
    for start in range(0, len(text), step):
        rows = slice(start, start + step)
        fused[rows] = model.rerank(text[rows], gather(candidates[rows].reshape(-1)), k, weights)[0]
    return _promote(stage1, candidates, fused)


def _coded_rerank(model: "EERCF", text: torch.Tensor, videos: "VideoFeatures",
                  candidates: torch.Tensor, weights: dict, codec: "PQCodec",
                  exact_candidates: int | None) -> torch.Tensor:
    """Stage 2 through a pq codec, one query at a time: the codes rank, the in-memory patches
    stand in for the index's cold tier (the same values it stores)."""
    from dataclasses import replace

    from ..index import codecs

    n, frames, patches, dim = videos.patches.shape
    codes = torch.from_numpy(codec.encode(videos.patches.reshape(-1, dim).cpu().numpy())).view(
        n, frames * patches, -1).to(videos.patches.device)
    hot = replace(videos, patches=videos.patches[:, :, :0])
    fused = torch.empty(candidates.shape, device=text.device)
    exact = codecs.exact_width(exact_candidates)
    flat = videos.patches.flatten(1, 2)  # each video's patches as its cold tier holds them
    for q, rows in enumerate(candidates):
        fused[q] = codecs.rerank(model, text[q:q + 1], hot.index(rows), codes[rows], weights,
                                 codec, lambda at, rows=rows: flat[rows[at]],
                                 with_weights=False, exact=exact)[0][0]
    return fused


def eval_codec(videos: "VideoFeatures", name: str) -> "PQCodec | None":
    """The codec ``eercf eval`` scores two-stage through: for ``pq``, a codebook trained on the
    evaluated videos exactly as an index of them trains one (None where it stays exact)."""
    from ..index import codecs

    if codecs.check_codec(name) == "exact":
        return None
    stored = videos.as_stored()
    n, frames, patches, _ = stored.patches.shape
    rows = torch.from_numpy(codecs.sample_rows(n, frames * patches))
    sample = codecs.training_sample(stored.patches[rows].cpu().numpy(), stored.mask[rows].cpu().numpy())
    if len(sample) < codecs.MIN_TRAIN_VECTORS:
        return None
    return codecs.PQCodec.train(sample)


def two_stage_v2t_scores(model: "EERCF", text: torch.Tensor, videos: "VideoFeatures", topk: int,
                         weights: dict | None = None, *, stage1: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Video-to-text two-stage ranking ``(scores [V, T], promoted [V, T])``: each video recalls
    its top ``topk`` captions by stage 1 and only those caption-video pairs get the fused
    score (the captions gathered, scored against the one video)."""
    stage1_v2t = (stage1_scores(model, text, videos) if stage1 is None else stage1).T
    k = min(topk, len(text))
    candidates = stage1_v2t.topk(k, dim=1).indices                         # [V, k] caption ids
    fused = torch.empty(candidates.shape, device=stage1_v2t.device)
    weights = model.fusion_weights(weights)
    for row in range(len(videos)):
        scores = model.similarity(text[candidates[row]], videos.index(slice(row, row + 1)))
        fused[row] = fuse(scores, weights)[:, 0]
    return _promote(stage1_v2t, candidates, fused)


class CandidateGather:
    """Gathers rows of ``videos`` into buffers reused across chunks: on a CPU, page-faulting
    fresh multi-megabyte tensors for every chunk costs more than the re-scoring itself."""

    def __init__(self, videos: "VideoFeatures", capacity: int):
        self.videos = videos
        self.buffers = {name: value.new_empty((capacity, *value.shape[1:]))
                        for name, value in vars(videos).items()}

    def __call__(self, rows: torch.Tensor) -> "VideoFeatures":
        n = len(rows)
        return type(self.videos)(**{
            name: torch.index_select(getattr(self.videos, name), 0, rows, out=buffer[:n])
            for name, buffer in self.buffers.items()})


def _promote(stage1: torch.Tensor, candidates: torch.Tensor, fused: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    scores = stage1.scatter(1, candidates, fused.to(stage1.dtype))
    promoted = torch.zeros_like(stage1, dtype=torch.bool).scatter(1, candidates, True)
    return scores, promoted


def queries_per_chunk(videos: "VideoFeatures", k: int) -> int:
    """Queries per stage-2 chunk so that their gathered candidates stay within budget."""
    per_video = sum(t[:1].numel() * t.element_size() for t in vars(videos).values())
    return max(1, _GATHER_BUDGET // max(1, k * per_video))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_modes(model: "EERCF") -> list[str]:
    """The modes ``eercf eval`` reports: ``two_stage_paper`` beside ``two_stage`` only where
    the checkpoint's fitted weights make them differ."""
    fitted = "fitted" in model.config["eercf"]
    return [m for m in MODES if fitted or m != "two_stage_paper"]


def score_modes(model: "EERCF", text: torch.Tensor, caption_video: torch.Tensor,
                videos: "VideoFeatures", *, modes: Iterable[str] | None = None,
                topk: int | None = None,
                dual_softmax: bool = False, weights: dict | None = None,
                codec: "PQCodec | None" = None, exact_candidates: int | None = None
                ) -> dict[str, dict[str, Any]]:
    """Metrics of each mode for encoded captions ``text [C, D]`` (caption c describes video
    ``caption_video[c]``) against ``videos``: ``{mode: {"t2v", "v2t", "seconds"}}``.

    ``videos`` are rounded as the index stores them first. ``seconds`` is the scoring wall
    time of both directions (metrics excluded). With ``dual_softmax`` the ``video+dsl`` and
    ``all_pairs+dsl`` modes are added (marked ``"transductive": True``). ``codec`` (see
    :func:`eval_codec`): text-to-video two-stage scores through it, as search does (video-to-text
    stays exact: search has no such direction), reading ``exact_candidates`` whole."""
    modes = default_modes(model) if modes is None else list(modes)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise EercfError(f"unknown evaluation mode {unknown[0]!r}: choose from {', '.join(MODES)}")
    if topk is not None and topk < 1:
        raise EercfError(f"topk must be at least 1, got {topk}")
    from ..index.codecs import exact_width

    exact_width(exact_candidates)  # a bad width fails before any scoring
    if len(text) == 0 or len(videos) == 0:
        raise EercfError("nothing to evaluate: no captions or no videos")
    videos = videos.as_stored().to(model.device)
    text = text.to(model.device)
    caption_video = torch.as_tensor(caption_video, dtype=torch.long)
    results: dict[str, dict[str, Any]] = {}
    full: dict[str, tuple[torch.Tensor, float]] = {}  # score matrices a dual softmax can reuse

    def timed(fn):
        _sync(model.device)
        start = time.perf_counter()
        value = fn()
        _sync(model.device)
        return value, time.perf_counter() - start

    with torch.inference_mode():
        for mode in modes:
            if mode == "video":
                sim, seconds = timed(lambda: stage1_scores(model, text, videos))
                results[mode] = multi_caption_metrics(sim, caption_video)
                full[mode] = sim, seconds
            elif mode == "all_pairs":
                sim, seconds = timed(lambda: all_pairs_scores(model, text, videos, weights))
                results[mode] = multi_caption_metrics(sim, caption_video)
                full[mode] = sim, seconds
            else:  # two_stage: what search does; two_stage_paper: with the paper's weights and K
                paper = mode == "two_stage_paper"
                k = topk or model.default_topk(paper=paper)
                fusion = model.fusion_weights(weights, paper=paper)

                def both_directions():
                    stage1 = stage1_scores(model, text, videos)
                    return (two_stage_scores(model, text, videos, k, fusion, stage1=stage1,
                                             codec=codec, exact_candidates=exact_candidates),
                            two_stage_v2t_scores(model, text, videos, k, fusion, stage1=stage1))
                (t2v, v2t), seconds = timed(both_directions)
                results[mode] = multi_caption_metrics(t2v[0], caption_video, v2t_sim=v2t[0],
                                                      t2v_promoted=t2v[1], v2t_promoted=v2t[1])
                results[mode].update(topk=k, weights=fusion)
            results[mode]["seconds"] = seconds
        if dual_softmax:
            for mode, (sim, base_seconds) in full.items():
                (t2v, v2t), seconds = timed(lambda: (apply_dual_softmax(sim), apply_dual_softmax(sim.T)))
                results[f"{mode}+dsl"] = {**multi_caption_metrics(t2v, caption_video, v2t_sim=v2t),
                                          "seconds": base_seconds + seconds, "transductive": True}
    return results


# ----------------------------------------------------------------------------- datasets

@dataclass
class EncodedSet:
    """A dataset split encoded for evaluation: captions ``text [C, D]``, ``caption_video[c]``
    the row in ``videos`` that caption c describes, and what could not be decoded."""

    text: torch.Tensor
    caption_video: torch.Tensor
    videos: "VideoFeatures"
    video_ids: list[str]
    captions: list[str]
    failed: list[Any] = field(default_factory=list)
    seconds: float = 0.0


def encode_records(model: "EERCF", records: Sequence["VideoRecord"], *,
                   transform: "VideoTransform | None" = None, batch_size: int = 16,
                   workers: int = 0, cache_dir: str | None = None,
                   progress: bool = True) -> EncodedSet:
    """Decode and encode every video of ``records`` and every caption of the videos that
    decoded, sampled with ``transform`` (default: the model's, as an index samples them).
    Videos that fail are reported by the loader, skipped, and listed in ``failed``."""
    from ..data.loader import VideoClips, make_loader
    from ..model import VideoFeatures
    from ..model.encode import encode_texts, encode_videos

    if not records:
        raise EercfError("no videos to evaluate")
    transform = transform or model.transform
    clips = VideoClips(list(records), transform)
    loader = make_loader(clips, batch_size=batch_size, workers=workers, cache_dir=cache_dir)
    start = time.perf_counter()
    parts, kept, failed = [], [], []
    for batch, features in encode_videos(model, loader, precision=transform.precision,
                                         progress=progress):
        failed.extend(batch.get("failed") or ())
        if features is not None:
            parts.append(features)
            kept.extend(int(i) for i in batch["index"])
    if not parts:
        raise EercfError(f"none of the {len(records)} videos could be decoded")
    captions, caption_video = [], []
    for row, index in enumerate(kept):
        captions.extend(records[index].captions)
        caption_video.extend([row] * len(records[index].captions))
    if not captions:
        raise EercfError("the videos to evaluate have no captions")
    text = encode_texts(model, captions, progress=progress)
    _sync(model.device)
    return EncodedSet(text=text, caption_video=torch.tensor(caption_video),
                      videos=VideoFeatures.cat(parts), video_ids=[records[i].video_id for i in kept],
                      captions=captions, failed=failed, seconds=time.perf_counter() - start)
