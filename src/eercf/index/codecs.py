"""Codecs for the fine store's patches, the bulk of an index (588 x 512 fp16 = 602 KB a video at
ViT-B/32 shapes; everything else is 27 KB).

``exact`` keeps them as fp16 in the row, read whole for every stage-2 candidate. ``pq`` splits
them into two tiers (docs/search.md):

- *hot*, read for every candidate: a product-quantisation code per patch (``M = D / 16``
  sub-vectors of 8 bits: 32 bytes a patch at 512-d, 18.8 KB a video), beside the frame levels.
- *cold*, read only for the few candidates the codes rank best: the exact fp16 patches, in a
  Lance blob column of the same row (so they commit, delete and compact with it).

Stage 2 builds one look-up table per query, scores every candidate patch from its code and
ranks the K candidates by those scores (the *rough pass*); the ``EXACT_CANDIDATES`` best are then
read whole from the cold tier (one contiguous byte range a candidate) and scored again exactly,
by the arithmetic the ``exact`` codec runs, so their scores, *when* and *where* are the exact
codec's bit for bit. The candidates the codes ranked lower keep their code's score, capped
below the lowest exact one: a code's error never lifts one of them over an exactly scored
candidate. The patch gate's temperature (0.01) makes ``patch_weak`` a near-max, and the gap
between a video's two best patches (about 0.009 in cosine) is smaller than any 64 KB code's
error (0.02-0.04): as the final score a code is not safe, as a ranker of the candidates worth
reading it is.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from ..errors import EercfError
from ..model.similarity import fuse, patch_products, scratch

if TYPE_CHECKING:
    from ..model import EERCF, VideoFeatures
    from .location import Location

CODECS = ("exact", "pq")
DEFAULT_CODEC = "pq"
BITS = 8                      # 256 centroids per sub-quantiser: a code is one byte
SUBVECTOR = 16                # dimensions per sub-quantiser
FRAMES_READ = 4               # frames a candidate the rough pass decodes (strong patch level)
EXACT_CANDIDATES = 15         # candidates (best by code) read whole and scored exactly: with
#                               10, 65-100 % of queries kept exact's top 10; with 15, 100 % on the
#                               two worst benchmarks tried (docs/benchmarks.md, codec_accuracy.py)
MIN_TRAIN_VECTORS = 16 * 256  # fewer: k-means of 256 centroids is not worth trusting
TRAIN_SAMPLE = 256 * 256      # patch vectors a codebook trains on (FAISS's 256 per centroid)
SEED = 1234
ENCODE_CHUNK = 128            # vectors encoded at once: their distances (4 MB at 512-d) fit in cache


def check_codec(name: str) -> str:
    if name not in CODECS:
        raise EercfError(f"unknown codec {name!r}: choose {', '.join(CODECS)}")
    return name


def exact_width(exact_candidates: int | None, k: int = 0) -> int:
    """How many candidates the exact pass reads whole: as asked (at least 0), else the larger
    of ``EXACT_CANDIDATES`` and the ``k`` hits shown, so every hit shown is scored exactly."""
    if exact_candidates is None:
        return max(EXACT_CANDIDATES, k)
    if exact_candidates < 0:
        raise EercfError(f"exact_candidates must be at least 0, got {exact_candidates}")
    return int(exact_candidates)


def subquantizers(dim: int) -> int:
    """``M`` for ``dim``-d patches: 16 dimensions each (32 at 512-d, 8 at the tiny 128-d)."""
    m = max(1, dim // SUBVECTOR)
    while dim % m:
        m -= 1
    return m


@dataclass(frozen=True)
class PQCodec:
    """A product quantiser for patch vectors: ``centroids [M, 256, D/M]`` (fp32), trained on a
    sample of the collection, and how many frames of a candidate stage 2 reads exactly."""

    centroids: np.ndarray
    frames_read: int = FRAMES_READ

    @property
    def m(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[0] * self.centroids.shape[2]

    @classmethod
    def train(cls, vectors: np.ndarray, frames_read: int | None = None) -> "PQCodec":
        """Train on ``vectors [N, D]`` (deterministic for the same vectors: FAISS k-means with a
        fixed seed, one thread)."""
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) < MIN_TRAIN_VECTORS:
            raise EercfError(f"a pq codebook needs at least {MIN_TRAIN_VECTORS} patch vectors "
                             f"to train on, got {len(vectors)}")
        dim = vectors.shape[1]
        pq = faiss.ProductQuantizer(dim, subquantizers(dim), BITS)
        pq.cp.seed = SEED
        pq.cp.max_points_per_centroid = TRAIN_SAMPLE // 256
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # the same codebook on any machine
        try:
            pq.train(vectors)
        finally:
            faiss.omp_set_num_threads(threads)
        centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
        return cls(centroids.astype(np.float32), FRAMES_READ if frames_read is None else frames_read)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """One code per vector: ``uint8 [N, M]``, each sub-vector's nearest centroid.

        As batched matrix products (``|c|^2 - 2 x.c`` for all 256 centroids of each
        sub-quantiser at once), in chunks whose distance block stays in cache: encoding is
        most of a pq ingest, and FAISS's ``compute_codes`` is 4.3x slower on one thread, 2x on
        two (benchmarks/pq_encode.py). The codes are FAISS's but for exact ties."""
        vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        centroids = torch.from_numpy(self.centroids)                  # [M, 256, s]
        m, _, sub = centroids.shape
        transposed = centroids.transpose(1, 2).contiguous()           # [M, s, 256]
        norms = (centroids * centroids).sum(-1)[:, None, :]           # [M, 1, 256]
        codes = torch.empty(len(vectors), m, dtype=torch.uint8)
        with torch.inference_mode():
            for start in range(0, len(vectors), ENCODE_CHUNK):
                part = vectors[start:start + ENCODE_CHUNK].view(-1, m, sub).transpose(0, 1)
                distances = torch.baddbmm(norms, part, transposed, alpha=-2.0)  # [M, n, 256]
                codes[start:start + ENCODE_CHUNK] = distances.argmin(-1).T
        return codes.numpy()

    def table(self, query: torch.Tensor) -> torch.Tensor:
        """The look-up table ``[M * 256]`` of one query ``[D]``: entry ``m * 256 + c`` is the
        product of the query's m-th sub-vector with centroid ``c`` of sub-quantiser ``m``."""
        centroids = torch.from_numpy(self.centroids).to(query.device)
        sub = query.float().reshape(self.m, 1, -1)
        return (centroids * sub).sum(-1).reshape(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The vectors codes ``uint8 [..., M]`` stand for: ``[..., D]`` fp32."""
        centroids = torch.from_numpy(self.centroids).to(codes.device).reshape(-1, self.dim // self.m)
        offsets = torch.arange(self.m, device=codes.device, dtype=torch.int32) * (1 << BITS)
        parts = torch.nn.functional.embedding(codes.to(torch.int32) + offsets, centroids)
        return parts.reshape(*codes.shape[:-1], self.dim)

    def products(self, table: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Approximate query-patch products from codes ``uint8 [..., M]``: ``[...]``."""
        # one bag of M look-ups per code: embedding_bag sums them in one pass over int32
        # indices, 7x faster than a gather of int64 indices and a sum; the indices are built
        # in a reused buffer (a fresh 3.8 MB one for K = 50 page-faults: 1.3 against 1.4-3.4 ms)
        offsets = torch.arange(self.m, device=codes.device, dtype=torch.int32) * (1 << BITS)
        index = scratch("pq-index", codes.shape, codes.device, torch.int32)
        index.copy_(codes).add_(offsets)
        sums = torch.nn.functional.embedding_bag(index.view(-1, self.m), table[:, None],
                                                 mode="sum")
        return sums.view(codes.shape[:-1])

    # ------------------------------------------------------------------ files
    def save(self, location: "Location") -> tuple[str, str]:
        """Write the codebook at ``location`` under a name from its content; returns (file
        name, sha256). Written once and never changed: a retrained codebook is a new file."""
        from safetensors.numpy import save

        data = save({"centroids": np.ascontiguousarray(self.centroids)},
                    metadata={"frames_read": str(self.frames_read), "bits": str(BITS)})
        digest = hashlib.sha256(data).hexdigest()
        name = f"codebook-{digest[:16]}.safetensors"
        if not location.exists(name):
            location.write_bytes(name, data)
        return name, digest

    @classmethod
    def load(cls, location: "Location", name: str, sha256: str) -> "PQCodec":
        """The codebook ``name`` at ``location``, refused unless its bytes have the recorded
        checksum."""
        from safetensors.numpy import load

        try:
            data = location.read_bytes(name)
        except OSError as err:
            raise EercfError(f"cannot read the codebook {location.join(name)}: "
                             f"{getattr(err, 'strerror', None) or err}") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise EercfError(f"codebook {location.join(name)} does not match its checksum in the "
                             f"manifest (damaged or replaced): rebuild with eercf index --reindex")
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        frames_read = int(header.get("__metadata__", {}).get("frames_read", FRAMES_READ))
        return cls(load(data)["centroids"].astype(np.float32), frames_read)


def training_sample(patches: np.ndarray, mask: np.ndarray, size: int = TRAIN_SAMPLE,
                    seed: int = SEED) -> np.ndarray:
    """A deterministic sample of the real frames' patch vectors: ``patches [V, F, P, D]``,
    ``mask [V, F]`` -> ``[<= size, D]`` fp32."""
    real = patches[mask].reshape(-1, patches.shape[-1])
    if len(real) > size:
        pick = np.random.default_rng(seed).choice(len(real), size, replace=False)
        real = real[np.sort(pick)]
    return np.ascontiguousarray(real, dtype=np.float32)


@dataclass
class SelectedPatches:
    """One query's view of its K candidates' patches in the rough pass: the approximate
    products of all ``F * P`` patches (``approx [1, K, F*P]``, from codes) and, for the strong
    patch level, the positions of each candidate's best frames' patches (``index [1, K, R]``),
    whose vectors ``decoded()`` gives from their codes (made only if that level is fused)."""

    approx: torch.Tensor
    index: torch.Tensor
    per_frame: int
    decoded: Callable[[], torch.Tensor]

    def products(self, text: torch.Tensor) -> torch.Tensor:
        return self.approx

    def pooled_sum(self, gate: torch.Tensor) -> torch.Tensor:
        """``sum_n gate_n p_n`` over the selected patches: ``[1, K, D]``."""
        vectors = self.decoded()
        weights = gate.gather(2, self.index)
        return torch.stack([weights[0, c] @ vectors[0, c] for c in range(vectors.shape[1])])[None]


@dataclass
class WholePatches:
    """One query's view of the candidates its exact pass reads whole: per candidate its
    ``F * P`` exact patches ``[F*P, D]`` (fp16), wherever they lie (views of the memory-mapped
    cold tier, read without a copy, or rows of a tensor), scored by the operations the
    ``exact`` codec runs on its stored patches, so the same to the bit."""

    rows: Sequence[torch.Tensor]
    per_frame: int

    def products(self, text: torch.Tensor) -> torch.Tensor:
        return patch_products([self.rows], text[:, None, :].expand(1, len(self.rows), -1))

    def pooled_sum(self, gate: torch.Tensor) -> torch.Tensor:
        return patch_products([self.rows], gate, transposed=True)


def select(codec: PQCodec, text: torch.Tensor, codes: torch.Tensor,
           mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For one query ``text [D]`` and its candidates' codes ``uint8 [K, F*P, M]`` (real frames
    in ``mask [K, F]``): the approximate products ``[K, F*P]`` and, per candidate, the
    positions (ascending) of every patch of the ``codec.frames_read`` frames whose best patch
    scores highest by code: ``[K, G*P]``, the patches the rough pass decodes for the strong
    patch level (whole frames: the best patch's near-equals mostly share its frame)."""
    approx = codec.products(codec.table(text), codes)
    k, frames = mask.shape
    per_frame = approx.shape[1] // frames
    best = approx.view(k, frames, per_frame).amax(dim=2).masked_fill(~mask, float("-inf"))
    chosen = torch.topk(best, min(codec.frames_read, frames), dim=1, sorted=False).indices
    chosen = chosen.sort(dim=1).values
    offsets = torch.arange(per_frame, device=codes.device)
    return approx, (chosen[:, :, None] * per_frame + offsets).reshape(k, -1)


@dataclass
class RoughPass:
    """Stage 2 of one query under pq before any exact read: scores from codes, and which
    candidates (``top``, positions, ascending) are read whole and scored exactly."""

    fused: torch.Tensor
    scores: dict[str, torch.Tensor]
    top: torch.Tensor


def rough(model: "EERCF", text: torch.Tensor, candidates: "VideoFeatures", codes: torch.Tensor,
          fusion: dict[str, float], codec: PQCodec, with_weights: bool = True,
          exact: int = EXACT_CANDIDATES) -> RoughPass:
    """Score query ``text [1, D]`` against its K ``candidates`` (hot tier: frame levels, and
    ``codes [K, F*P, M]``) with every patch product from its code, and pick the ``exact``
    best candidates (all K at most, none at 0) for the exact pass."""
    k, frames = candidates.mask.shape
    approx, index = select(codec, text[0], codes, candidates.mask)
    decoded = lambda: codec.decode(  # noqa: E731
        codes.gather(1, index[..., None].expand(-1, -1, codes.shape[2])))[None]
    view = SelectedPatches(approx[None], index[None], codes.shape[1] // frames, decoded)
    fused, scores = model.rerank(text, candidates, k, fusion, with_weights, selected=[view])
    top = torch.topk(fused[0], min(exact, k)).indices.sort().values
    return RoughPass(fused, scores, top)


def sharpen(model: "EERCF", text: torch.Tensor, candidates: "VideoFeatures", first: RoughPass,
            exact: Sequence[torch.Tensor], fusion: dict[str, float], with_weights: bool = True
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Score the rough pass's ``top`` candidates again with their whole patches (``exact``:
    per candidate ``[F*P, D]``, a list or the rows of a tensor), as the ``exact`` codec scores
    them; returns the fused score ``[1, K]`` and the level scores, as ``model.rerank`` does.
    The others' scores stay the codes', capped just below the lowest exact fused score."""
    top = first.top
    if not len(top):  # nothing read whole: the codes' scores stand
        return first.fused, first.scores
    view = WholePatches(exact, exact[0].shape[0] // candidates.mask.shape[1])
    # only the patch levels change: the others, scored per candidate alike in any company,
    # are the rough pass's already
    _, scores = model.rerank(text, candidates.index(top), len(top), fusion, with_weights,
                             selected=[view], patches_only=True)
    for key, value in scores.items():
        first.scores[key][0, top] = value[0]
    exact_fused = fuse(first.scores, fusion)[0, top]
    floor = torch.nextafter(exact_fused.min(), torch.tensor(float("-inf")))
    first.fused[0].clamp_(max=floor)
    first.fused[0, top] = exact_fused
    return first.fused, first.scores


def rerank(model: "EERCF", text: torch.Tensor, candidates: "VideoFeatures",
           codes: torch.Tensor, fusion: dict[str, float], codec: PQCodec,
           read: Callable[[torch.Tensor], torch.Tensor], with_weights: bool = True,
           exact: int = EXACT_CANDIDATES) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 2 under pq for one query, as ``model.rerank`` returns it: :func:`rough`, then
    ``read(positions)`` the whole patches of the best candidates (per candidate ``[F*P, D]``),
    then :func:`sharpen` (search reads the store's cold tier, ``eercf eval`` memory: the same
    arithmetic, so both rank alike; a batch of searches reads once for all)."""
    first = rough(model, text, candidates, codes, fusion, codec, with_weights, exact)
    return sharpen(model, text, candidates, first, read(first.top), fusion, with_weights)


def sample_rows(videos: int, patches_per_video: int, size: int = TRAIN_SAMPLE,
                seed: int = SEED) -> np.ndarray:
    """The rows (ascending) whose patches a codebook trains on: enough for twice ``size``
    vectors, all rows of a small collection. An index and ``eercf eval`` given the same videos
    in the same order pick the same rows, so they train the same codebook."""
    wanted = min(videos, -(-2 * size // max(1, patches_per_video)))
    if wanted == videos:
        return np.arange(videos)
    return np.sort(np.random.default_rng(seed).choice(videos, wanted, replace=False))
