"""Batches that hold groups of similar videos, so the contrastive loss sees hard negatives.

Random batches rarely put two videos that differ only in a detail side by side, so nothing
asks the model to tell them apart; the test set does. Here each video's captions become a
hashed TF-IDF vector of their words, every video gets its nearest neighbours by cosine
(FAISS), and an epoch's order is made of small groups of mutual neighbours, shuffled as
groups: a batch then holds several unrelated groups (easy negatives) of similar videos
(hard negatives). Deterministic for ``(seed, epoch)``, so resumed runs see the same batches.
"""
from __future__ import annotations

import re
import zlib
from collections import Counter
from typing import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


def caption_vectors(captions: Sequence[Sequence[str]], dim: int = 1024) -> np.ndarray:
    """One L2-normalised hashed TF-IDF vector ``[dim]`` per video from all its captions.
    Words hash by CRC-32 (stable across processes, unlike Python's ``hash``)."""
    counts = [Counter(_WORD.findall(" ".join(texts).lower())) for texts in captions]
    document_frequency = Counter(word for c in counts for word in c)
    n = len(counts)
    slot = {word: zlib.crc32(word.encode()) % dim for word in document_frequency}
    idf = {word: np.log((1 + n) / (1 + df)) + 1.0 for word, df in document_frequency.items()}
    out = np.zeros((n, dim), dtype=np.float32)
    for row, c in enumerate(counts):
        for word, count in c.items():
            out[row, slot[word]] += count * idf[word]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def caption_neighbours(captions: Sequence[Sequence[str]], k: int = 16) -> np.ndarray:
    """``[n, min(k, n-1)]`` indices of each video's most similar other videos by caption
    words, most similar first."""
    import faiss

    vectors = caption_vectors(captions)
    n = len(vectors)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, found = index.search(vectors, k + 1)
    out = np.empty((n, k), dtype=np.int64)
    for row in range(n):  # drop the video itself (not always first when vectors tie)
        others = [int(j) for j in found[row] if j != row and j >= 0][:k]
        out[row, :len(others)] = others
        out[row, len(others):] = others[-1] if others else row
    return out


def similar_groups(neighbours: np.ndarray, size: int, rng: np.random.Generator
                   ) -> list[list[int]]:
    """Partition ``range(n)`` into groups of up to ``size`` mutual neighbours: videos are
    visited in random order, and each one not yet placed opens a group and takes its nearest
    neighbours not yet placed. Groups come out in random order."""
    n = len(neighbours)
    placed = np.zeros(n, dtype=bool)
    groups = []
    for seed_video in rng.permutation(n).tolist():
        if placed[seed_video]:
            continue
        group = [seed_video]
        placed[seed_video] = True
        for other in neighbours[seed_video].tolist():
            if len(group) == size:
                break
            if not placed[other]:
                group.append(other)
                placed[other] = True
        groups.append(group)
    order = rng.permutation(len(groups))
    return [groups[i] for i in order]
