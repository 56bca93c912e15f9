"""The EERCF model (``docs/method.md``): CLIP towers, a temporal block, the parameter-free
text-gated interaction block giving video-, frame- and patch-level features, the five
similarities and the contrastive + Pearson-constraint loss. The model also carries its video
transform (``model.transform``), so every path samples a video the way it was trained."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EercfError
from . import similarity as sim
from .clip import CLIP, Transformer
from .features import VideoFeatures
from .loss import LossWeights
from .loss import loss as eercf_loss
from .tib import Temperatures
from .transform import VideoTransform

if TYPE_CHECKING:
    from .tokenizer import CLIPTokenizer


class EERCF(nn.Module):
    """EERCF on a CLIP backbone. Build from an architecture dict (``configs/*.json``);
    load weights with :func:`eercf.load_model`."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        method = config["eercf"]
        text, dim = config["text"], config["embed_dim"]
        if text["width"] != dim:
            raise EercfError(f"model {config.get('name', '?')}: the temporal block runs on "
                             f"{dim}-d frame features, so the text width must equal embed_dim "
                             f"(got {text['width']})")
        if method["max_frames"] > text["context_length"]:
            raise EercfError(f"max_frames {method['max_frames']} exceeds the "
                             f"{text['context_length']} frame positions")
        self.clip = CLIP(dim, config["vision"], text)
        self.frame_position_embeddings = nn.Embedding(text["context_length"], text["width"])
        self.temporal = Transformer(text["width"], method["temporal_layers"], text["heads"])
        self.global_weight = nn.Parameter(torch.eye(dim))                  # W_g
        self.frame_weight = nn.Parameter(torch.eye(method["max_frames"]))  # W_f
        self.temperatures = Temperatures.from_config(method)
        self.tokenizer: CLIPTokenizer | None = None
        self.init_temporal_from_text()

    # ------------------------------------------------------------------ set-up
    @torch.no_grad()
    def init_temporal_from_text(self) -> None:
        """Initialise the temporal block from the first text layers and the frame positions
        from the text positional embedding (CLIP4Clip's "seqTransf" recipe)."""
        if self.temporal.layers > self.clip.transformer.layers:
            raise EercfError(f"{self.temporal.layers} temporal layers need as many text layers "
                             f"(the text tower has {self.clip.transformer.layers})")
        for mine, source in zip(self.temporal.resblocks, self.clip.transformer.resblocks):
            mine.load_state_dict(source.state_dict())
        self.frame_position_embeddings.weight.copy_(self.clip.positional_embedding)

    @property
    def max_frames(self) -> int:
        return self.config["eercf"]["max_frames"]

    @property
    def max_words(self) -> int:
        return self.config["eercf"]["max_words"]

    @property
    def logit_scale(self) -> torch.Tensor:
        """``s = exp(logit_scale)`` of CLIP."""
        return self.clip.logit_scale.exp().float()

    @property
    def device(self) -> torch.device:
        return self.global_weight.device

    @property
    def transform(self) -> VideoTransform:
        """How a video becomes this model's input (frames, rate, size, mean/std, precision)."""
        return VideoTransform.from_config(self.config)

    @transform.setter
    def transform(self, value: VideoTransform) -> None:
        if (value.frames, value.image_size) != (self.max_frames, self.config["vision"]["image_size"]):
            raise EercfError(f"a transform of {value.frames} frames at {value.image_size} px does "
                             f"not fit this model ({self.max_frames} frames at "
                             f"{self.config['vision']['image_size']} px)")
        self.config = {**self.config, "preprocess": value.preprocess_config()}

    # ------------------------------------------------------------------ encoders
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Texts -> ids ``[T, max_words]``: ``[SOT] + bpe[: max_words-2] + [EOT]``, zero padded."""
        if self.tokenizer is None:
            raise EercfError("this model has no tokenizer: pass tokenizer= (a tokenizer.json or "
                             "bpe_simple_vocab_16e6.txt.gz) to load_model, or run `eercf download`")
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer.encode(list(texts), self.max_words)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``[T, L]`` -> L2-normalised sentence features ``[T, D]`` (fp32)."""
        return F.normalize(self.clip.encode_text(ids.to(self.device)).float(), dim=-1)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> VideoFeatures:
        """frames ``[V, F, 3, H, W]`` (preprocessed), mask ``[V, F]`` (True = real frame; None =
        all real) -> :class:`VideoFeatures`. Videos with fewer than ``max_frames`` frames are
        padded with masked slots."""
        if frames.dim() != 5:
            raise EercfError(f"frames must be [videos, frames, 3, H, W], got {tuple(frames.shape)}")
        n_videos, n_frames = frames.shape[:2]
        if n_frames > self.max_frames:
            raise EercfError(f"{n_frames} frames per video exceed this model's max_frames "
                             f"{self.max_frames}")
        frames = frames.to(self.device)
        if mask is None:
            mask = torch.ones(n_videos, n_frames, dtype=torch.bool, device=self.device)
        mask = mask.to(self.device, torch.bool)
        if not bool(mask.any(dim=1).all()):
            raise EercfError("every video needs at least one real frame (a mask row is all False)")
        tokens = self.clip.encode_image(frames.flatten(0, 1))
        tokens = tokens.float().unflatten(0, (n_videos, n_frames))        # [V, F, 1+P, D]
        frame_raw, patch_raw = tokens[:, :, 0], tokens[:, :, 1:]
        if n_frames < self.max_frames:
            pad = self.max_frames - n_frames
            frame_raw = F.pad(frame_raw, (0, 0, 0, pad))
            patch_raw = F.pad(patch_raw, (0, 0, 0, 0, 0, pad))
            mask = F.pad(mask, (0, pad), value=False)
        n_frames = self.max_frames
        valid = mask[..., None].float()
        position = self.frame_position_embeddings.weight[:n_frames].float()
        hidden = self.temporal((frame_raw + position).to(self.temporal.resblocks[0].ln_1.weight.dtype),
                               key_padding_mask=~mask).float() + frame_raw
        temporal = F.normalize(hidden, dim=-1) * valid
        video = F.normalize(temporal.sum(1) / valid.sum(1), dim=-1)
        return VideoFeatures(video=video,
                             frames=F.normalize(frame_raw, dim=-1) * valid,
                             temporal=temporal,
                             patches=F.normalize(patch_raw, dim=-1) * valid[..., None],
                             mask=mask)

    # ------------------------------------------------------------------ similarities
    def _weights(self) -> dict:
        return dict(global_weight=self.global_weight, frame_weight=self.frame_weight,
                    scale=self.logit_scale, temps=self.temperatures)

    def fusion_weights(self, weights: dict[str, float] | None = None, *,
                       paper: bool = False) -> dict[str, float]:
        """The stage-2 fusion weights with ``weights`` overriding some levels, e.g.
        ``{"patch_weak": 0}`` for a no-patch ablation: the weights fitted to data
        (``eercf.fitted``, written by calibration) where the checkpoint has them, else (or
        with ``paper``) the paper's (``eercf.rerank``). Evaluation and search both take their
        weights from here."""
        unknown = sorted(set(weights or {}) - set(sim.LEVELS))
        if unknown:
            raise EercfError(f"unknown fusion weight {unknown[0]!r}: levels are "
                             f"{', '.join(sim.LEVELS)}")
        method = self.config["eercf"]
        source = method["rerank"] if paper or "fitted" not in method else method["fitted"]["weights"]
        merged = {level: float(source.get(level, 0.0)) for level in sim.LEVELS}
        return {**merged, **{k: float(v) for k, v in (weights or {}).items()}}

    def default_topk(self, *, paper: bool = False) -> int:
        """How many stage-1 candidates stage 2 re-scores: the fitted K where the checkpoint
        has one, else (or with ``paper``) the paper's 50."""
        method = self.config["eercf"]
        if paper or "fitted" not in method:
            return int(method["rerank"]["topk"])
        return int(method["fitted"]["topk"])

    def stage1_query(self, text: torch.Tensor) -> torch.Tensor:
        """``q = W_g^T t`` (row form ``t @ W_g``), so stage 1 is one inner product ``s * q . v``."""
        return text.float() @ self.global_weight.float()

    def similarity(self, text: torch.Tensor, video: VideoFeatures, *,
                   chunk_budget: int = 2 ** 25) -> dict[str, torch.Tensor]:
        """Every text ``[T, D]`` against every video: a dict of five ``[T, V]`` logits.
        Runs in text x video chunks of at most ``chunk_budget`` gate entries (about
        ``chunk_budget * 8`` bytes of scratch), so large galleries fit in bounded memory."""
        n_texts, n_videos = text.shape[0], len(video)
        per_pair = video.frames.shape[1] * (video.patches.shape[2] + 1) + video.video.shape[1]
        video_chunk = max(1, min(n_videos, chunk_budget // per_pair))
        text_chunk = max(1, min(n_texts, chunk_budget // (per_pair * video_chunk)))
        out = {level: torch.empty(n_texts, n_videos, device=text.device) for level in sim.LEVELS}
        weights = self._weights()
        for v0 in range(0, n_videos, video_chunk):
            part = video.index(slice(v0, v0 + video_chunk))
            for t0 in range(0, n_texts, text_chunk):
                scores = sim.dense_scores(text[t0:t0 + text_chunk], part.video, part.frames,
                                          part.temporal, part.patches, part.mask, **weights)
                for level in sim.LEVELS:
                    out[level][t0:t0 + text_chunk, v0:v0 + video_chunk] = scores[level]
        return out

    def rerank(self, text: torch.Tensor, candidates: VideoFeatures, k: int,
               weights: dict[str, float] | None = None, with_weights: bool = True,
               selected: Sequence[Any] | None = None, patches_only: bool = False
               ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Stage 2, the one implementation search and ``eercf eval`` share: query ``t`` against
        its own ``k`` candidates (rows of ``candidates``, query-major, ``T * k`` of them; fine
        levels fp32 or fp16 as stored). Returns the fused score ``[T, k]`` and the ``[T, k]``
        scores of the fused levels (a level weighted zero is not computed), plus the gate
        weights that say *when* and *where* unless ``with_weights`` is False.

        Queries are scored one at a time: BLAS kernels round differently for different batch
        shapes, and the 0.01 softmax temperatures amplify that, so this keeps a query's scores
        bit-identical whether it comes alone (search) or in a batch (evaluation).
        ``selected``: per query, a compact codec's view of its candidates' patches
        (``index.codecs.SelectedPatches``), used in place of ``candidates.patches``. With
        ``patches_only`` (the codec's exact pass) only the patch levels are scored, and the
        fused score, which needs every level, is None."""
        if len(candidates) != text.shape[0] * k:
            raise ValueError(f"{len(candidates)} candidates for {text.shape[0]} queries x k={k}")
        fusion = self.fusion_weights(weights)
        levels = [level for level in sim.LEVELS if float(fusion.get(level, 0.0))]
        c, params = candidates, self._weights()
        parts = []
        for q in range(text.shape[0]):
            rows = slice(q * k, (q + 1) * k)
            parts.append(sim.candidate_scores(
                text[q:q + 1], c.video[rows][None], c.frames[rows][None], c.temporal[rows][None],
                c.patches[rows][None] if selected is None else selected[q], c.mask[rows][None],
                with_weights=with_weights, levels=levels, patches_only=patches_only, **params))
        scores = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        return (None if patches_only else sim.fuse(scores, fusion)), scores

    # ------------------------------------------------------------------ training
    def loss(self, text: torch.Tensor, video: VideoFeatures, weights: LossWeights | None = None,
             temperatures: Temperatures | None = None) -> dict[str, torch.Tensor]:
        """The training loss (``docs/method.md`` §4) for matched pairs (text i with video i):
        every term and the weighted ``total``. ``weights`` default to the paper's;
        ``temperatures`` (default: the model's) let a trainer warm the gates for a step
        without touching the model."""
        params = self._weights()
        if temperatures is not None:
            params["temps"] = temperatures
        return eercf_loss(text, video, weights=weights or LossWeights(), **params)
