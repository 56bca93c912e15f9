"""The EERCF model (DESIGN.md §1): CLIP towers, a temporal block, the parameter-free
text-gated interaction block giving video-, frame- and patch-level features, the five
similarities and the contrastive + Pearson-constraint loss."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import similarity as sim
from .clip import CLIP, Transformer
from .errors import EercfError

if TYPE_CHECKING:
    from .tokenizer import CLIPTokenizer


@dataclass
class VideoFeatures:
    """Per-video features at every level; rows are videos. Padded frames are zero and masked."""

    video: torch.Tensor     # [V, D]       norm(mean of valid norm(h_i)), text-agnostic
    frames: torch.Tensor    # [V, F, D]    norm(f_i), raw CLIP frame features
    temporal: torch.Tensor  # [V, F, D]    norm(h_i), after the temporal block
    patches: torch.Tensor   # [V, F, P, D] norm(p_j)
    mask: torch.Tensor      # [V, F] bool, True = a real frame

    def __len__(self) -> int:
        return self.video.shape[0]

    def _map(self, fn) -> "VideoFeatures":
        return VideoFeatures(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def index(self, idx) -> "VideoFeatures":
        """Rows ``idx`` (an int tensor, list, slice or bool mask)."""
        return self._map(lambda t: t[idx])

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "VideoFeatures":
        """Move to ``device``; ``dtype`` applies to the float features only, never the mask."""
        return VideoFeatures(*(getattr(self, n).to(device=device, dtype=dtype)
                               for n in ("video", "frames", "temporal", "patches")),
                             mask=self.mask.to(device=device))

    def as_stored(self) -> "VideoFeatures":
        """The features as an index keeps them: fine levels rounded through fp16, video fp32."""
        def rounded(t: torch.Tensor) -> torch.Tensor:
            return t.to(torch.float16).to(torch.float32)
        return replace(self, video=self.video.float(), frames=rounded(self.frames),
                       temporal=rounded(self.temporal), patches=rounded(self.patches))

    @staticmethod
    def cat(parts: Sequence["VideoFeatures"]) -> "VideoFeatures":
        return VideoFeatures(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                                for f in fields(VideoFeatures)})


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
        self.temperatures = sim.Temperatures.from_config(method)
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

    def fusion_weights(self, weights: dict[str, float] | None = None) -> dict[str, float]:
        """The stage-2 fusion weights (config ``eercf.rerank``) with ``weights`` overriding some
        levels, e.g. ``{"patch_weak": 0}`` for a no-patch ablation; evaluation and search both
        take their weights from here."""
        unknown = sorted(set(weights or {}) - set(sim.LEVELS))
        if unknown:
            raise EercfError(f"unknown fusion weight {unknown[0]!r}: levels are "
                             f"{', '.join(sim.LEVELS)}")
        merged = {k: v for k, v in self.config["eercf"]["rerank"].items() if k in sim.LEVELS}
        return {**merged, **{k: float(v) for k, v in (weights or {}).items()}}

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

    def candidate_scores(self, text: torch.Tensor, candidates: VideoFeatures, k: int,
                         with_weights: bool = True,
                         levels: Sequence[str] = sim.LEVELS) -> dict[str, torch.Tensor]:
        """Query ``t`` against its own ``k`` candidates (rows of ``candidates``, query-major,
        ``T * k`` of them; fine levels fp32 or fp16 as stored): ``[T, k]`` logits of ``levels``
        (default all five) plus the gate weights.

        Queries are scored one at a time: BLAS kernels round differently for different batch
        shapes, and the 0.01 softmax temperatures amplify that, so this keeps a query's scores
        bit-identical whether it comes alone (search) or in a batch (evaluation)."""
        c = candidates
        if len(c) != text.shape[0] * k:
            raise ValueError(f"{len(c)} candidates for {text.shape[0]} queries x k={k}")
        weights = self._weights()
        parts = []
        for q in range(text.shape[0]):
            rows = slice(q * k, (q + 1) * k)
            parts.append(sim.candidate_scores(
                text[q:q + 1], c.video[rows][None], c.frames[rows][None], c.temporal[rows][None],
                c.patches[rows][None], c.mask[rows][None], with_weights=with_weights,
                levels=levels, **weights))
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def rerank(self, text: torch.Tensor, candidates: VideoFeatures, k: int,
               weights: dict | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Stage 2: the fused score ``[T, k]`` of each query's candidates, and the scores of
        the levels it fuses (a level weighted zero is not computed)."""
        weights = weights or self.config["eercf"]["rerank"]
        levels = [level for level in sim.LEVELS if float(weights.get(level, 0.0))]
        scores = self.candidate_scores(text, candidates, k, levels=levels)
        return sim.fuse(scores, weights), scores

    # ------------------------------------------------------------------ training
    def loss(self, text: torch.Tensor, video: VideoFeatures) -> dict[str, torch.Tensor]:
        """Loss of DESIGN.md §1 for matched pairs (text i with video i). The strong scores gate
        each video by its own caption, with the gate weights detached."""
        w = self.config["eercf"]["loss"]
        t = text.float()
        weights = self._weights()
        scale, temps = weights["scale"], self.temperatures
        n_videos, n_frames, n_patches, dim = video.patches.shape
        dense = sim.dense_scores(t, video.video, video.frames, video.temporal, video.patches,
                                 video.mask, **weights)
        # own-caption gates: caption j gates video j only
        flat_patches = video.patches.float().reshape(n_videos, n_frames * n_patches, dim)
        patch_mask = video.mask.repeat_interleave(n_patches, dim=1)
        own_a = torch.einsum("vd,vfd->vf", t, video.frames.float()).detach()
        own_b = torch.einsum("vd,vnd->vn", t, flat_patches).detach()
        frame_gate = sim.masked_softmax(own_a, video.mask, temps.frame_strong)
        patch_gate = sim.masked_softmax(own_b, patch_mask, temps.patch)
        pooled_frames = F.normalize(torch.einsum("vf,vfd->vd", frame_gate, video.temporal.float()), dim=-1)
        pooled_patches = F.normalize(torch.einsum("vn,vnd->vd", patch_gate, flat_patches), dim=-1)
        frame_strong = scale * t @ pooled_frames.T
        patch_strong = scale * t @ pooled_patches.T

        weak = (w["weak_video"] * dense["video"] + w["weak_frame"] * dense["frame_weak"]
                + w["weak_patch"] * dense["patch_weak"])
        strong = w["strong_frame"] * frame_strong + w["strong_patch"] * patch_strong
        out = {
            "contrastive_weak": sim.symmetric_cross_entropy(weak),
            "contrastive_strong": sim.symmetric_cross_entropy(strong),
            "pearson_video": sim.pearson_constraint(t, video.video.float(), w["pearson_diag"], w["pearson_offdiag"]),
            "pearson_frame": sim.pearson_constraint(t, pooled_frames, w["pearson_diag"], w["pearson_offdiag"]),
            "pearson_patch": sim.pearson_constraint(t, pooled_patches, w["pearson_diag"], w["pearson_offdiag"]),
        }
        out["total"] = (w["weak_weight"] * out["contrastive_weak"]
                        + w["strong_weight"] * out["contrastive_strong"]
                        + w["pearson_weight"] * (w["pearson_video"] * out["pearson_video"]
                                                 + w["pearson_frame"] * out["pearson_frame"]
                                                 + w["pearson_patch"] * out["pearson_patch"]))
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` + ``tokenizer.json`` to ``folder``."""
        from .checkpoint import save_model
        return save_model(self, folder)
