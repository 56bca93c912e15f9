"""A pq store's hot tier held in memory, for long-running searchers: stage 2 then reads only the
cold tier from the store (through memory maps where the store is local: ``cold``), and the
tier follows appends by reading only the new rows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import lance
import numpy as np
import torch

from ..errors import EercfError
from .cold import MappedCold
from .store import Rows, is_coded, read_whole, take_hot

if TYPE_CHECKING:
    from ..model import VideoFeatures


@dataclass
class HotTier:
    """A pq store's hot tier (everything stage 2 reads for every candidate) for every row of
    one version, held in memory with the rows' information: 45 KB a video at ViT-B/32, so a
    search reads only the cold tier from the store. For long-running searchers (a service),
    not one-shot commands."""

    version: int
    features: "VideoFeatures"
    codes: torch.Tensor
    rows: Rows
    layout: tuple  # (fragment id, rows, deleted rows) of each fragment of the version
    cold: MappedCold | None = None  # the cold tier mapped, when the store's files allow

    @classmethod
    def load(cls, dataset: lance.LanceDataset) -> "HotTier":
        if not is_coded(dataset.schema):
            raise EercfError("only a pq-coded store has a hot tier to hold in memory")
        features, codes, rows = take_hot(dataset, np.arange(dataset.count_rows()))
        return cls(dataset.version, features, codes, rows, _layout(dataset),
                   MappedCold.open(dataset))

    @staticmethod
    def follow(held: "HotTier | None", dataset: lance.LanceDataset) -> "HotTier":
        """The hot tier of ``dataset``'s version, from ``held`` (an earlier one) if it helps."""
        if held is None:
            return HotTier.load(dataset)
        return held if held.version == dataset.version else held.refreshed(dataset)

    def refreshed(self, dataset: lance.LanceDataset) -> "HotTier":
        """The hot tier of ``dataset``'s version: after appends only (the old fragments
        unchanged, new ones after them) the new rows are read and added; after any other
        change (a removal, a compaction, a re-coding) the whole tier is read again."""
        from ..model import VideoFeatures

        layout = _layout(dataset)
        if layout[:len(self.layout)] != self.layout or not is_coded(dataset.schema):
            return HotTier.load(dataset)
        start = len(self.rows.ids)
        if dataset.count_rows() == start:
            return HotTier(dataset.version, self.features, self.codes, self.rows, layout,
                           self.cold)
        features, codes, rows = take_hot(dataset, np.arange(start, dataset.count_rows()))
        cold = None
        if self.cold is not None:
            more = MappedCold.open(dataset, start, dataset.get_fragments()[len(self.layout):])
            cold = None if more is None else self.cold.extended(more)
        return HotTier(dataset.version, VideoFeatures.cat([self.features, features]),
                       torch.cat([self.codes, codes]), self.rows.concat(rows), layout, cold)

    def take(self, offsets: np.ndarray) -> tuple["VideoFeatures", torch.Tensor, Rows]:
        at = np.asarray(offsets, dtype=np.int64)
        index = torch.from_numpy(at)
        return self.features.index(index), self.codes.index_select(0, index), self.rows.select(at)

    def read_whole(self, dataset: lance.LanceDataset, offsets: np.ndarray, patches: int,
                   device: torch.device | str = "cpu") -> "list[torch.Tensor] | torch.Tensor":
        """Every exact patch of the rows at ``offsets`` (``patches`` a row), per row ``[patches,
        D]``: views of the maps when held, else read through Lance (a tensor of the rows)."""
        if self.cold is not None:
            return self.cold.whole_rows(offsets, patches, device)
        return read_whole(dataset, offsets, patches, device)


def _layout(dataset: lance.LanceDataset) -> tuple:
    return tuple((f.fragment_id, f.metadata.num_rows, f.metadata.num_deletions)
                 for f in dataset.get_fragments())
