"""The feature store of an index: a Lance dataset with one row per video, the source of truth.

Fine levels (frames, temporal, patches) are kept in fp16, which halves the bytes per video and
is what ``VideoFeatures.as_stored()`` reproduces for evaluation; the video vector stays fp32
because stage 1 ranks the whole collection by it. Every feature column stage 2 reads for each
candidate is fixed-size per row, so that a ``take`` of K candidates reads K contiguous slices.
Under the ``pq`` codec (``codecs``) the patches move to a blob column read by byte range, and
a ``codes`` column holds their product-quantisation codes.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import lance
import numpy as np
import pyarrow as pa
import torch

from ..errors import EercfError

if TYPE_CHECKING:
    from ..model import VideoFeatures
    from .codecs import PQCodec

FEATURE_COLUMNS = ("video", "frames", "temporal", "patches", "mask")
HOT_COLUMNS = ("video", "frames", "temporal", "codes", "mask")  # what pq reads per candidate
DATASET = "videos.lance"   # the store's name inside an index
INFO_COLUMNS = ("id", "uri", "duration", "timestamps", "metadata")
SPAN_COLUMNS = ("segment_start", "segment_end")  # a segment's span in its video (null: whole)
PATCHES_KEY = b"eercf.patches"  # schema metadata of a pq store: patches per frame


def schema(dim: int, frames: int, patches: int, codes: int = 0) -> pa.Schema:
    """The row layout for ``frames`` frames of ``patches`` patches, ``dim``-d features; with
    ``codes`` (bytes per patch code, the pq codec's M) the patches are a blob beside their codes."""
    if codes:
        exact = schema(dim, frames, patches)
        fields = [f for f in exact if f.name != "patches"]
        fields.insert(exact.get_field_index("patches"),
                      pa.field("patches", pa.large_binary(),
                               metadata={"lance-encoding:blob": "true"}))
        fields.insert(exact.get_field_index("patches") + 1,
                      pa.field("codes", pa.list_(pa.uint8(), frames * patches * codes)))
        return pa.schema(fields, metadata={PATCHES_KEY: str(patches).encode()})
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("duration", pa.float64()),                  # seconds; null when unknown
        pa.field("segment_start", pa.float64()),             # a long video's segment: its span
        pa.field("segment_end", pa.float64()),               # (seconds); null: the whole video
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("mask", pa.list_(pa.bool_(), frames)),      # True = a real frame
        pa.field("timestamps", pa.list_(pa.float32(), frames)),  # seconds; NaN where masked
        pa.field("video", pa.list_(pa.float32(), dim)),
        pa.field("frames", pa.list_(pa.float16(), frames * dim)),
        pa.field("temporal", pa.list_(pa.float16(), frames * dim)),
        pa.field("patches", pa.list_(pa.float16(), frames * patches * dim)),
        pa.field("metadata", pa.string()),                   # user metadata as JSON
    ])


def dims(table_schema: pa.Schema) -> tuple[int, int, int]:
    """``(dim, frames, patches)`` of a store from its schema."""
    dim = table_schema.field("video").type.list_size
    frames = table_schema.field("mask").type.list_size
    if is_coded(table_schema):
        return dim, frames, int((table_schema.metadata or {})[PATCHES_KEY])
    patches = table_schema.field("patches").type.list_size // (frames * dim)
    return dim, frames, patches


def check_dims(dataset: lance.LanceDataset, expected: tuple[int, int, int], where: str) -> None:
    """Refuse a dataset that is not a feature store, or one of other shapes than ``expected``
    ``(dim, frames, patches)`` (what the index's manifest records)."""
    try:
        found = dims(dataset.schema)
    except KeyError as err:
        raise EercfError(f"{where} is not an eercf feature store (no column {err})") from None
    if found != expected:
        raise EercfError(f"{where} stores (dim, frames, patches) {found}, its manifest says "
                         f"{expected}")


def write_schema(table_schema: pa.Schema) -> pa.Schema:
    """The schema new rows of a store are written with: Lance reports a blob column as its
    own extension type, rows arrive with the blob as plain large binary."""
    if not is_coded(table_schema):
        return table_schema
    dim, frames, patches = dims(table_schema)
    return schema(dim, frames, patches, code_bytes(table_schema)).with_metadata(
        table_schema.metadata)


def has_spans(table_schema: pa.Schema) -> bool:
    """Whether the store can hold segments (format 3; older stores gain the columns on the
    first add of a segmented video: :func:`add_span_columns`)."""
    return "segment_start" in table_schema.names


def add_span_columns(dataset: lance.LanceDataset) -> None:
    """Give an older store the (all-null) segment span columns, in a metadata-only commit."""
    dataset.add_columns([pa.field(name, pa.float64()) for name in SPAN_COLUMNS])


def info_columns(table_schema: pa.Schema) -> list[str]:
    """The per-row information columns this store has."""
    return list(INFO_COLUMNS + (SPAN_COLUMNS if has_spans(table_schema) else ()))


def is_coded(table_schema: pa.Schema) -> bool:
    """Whether the store keeps its patches as codes plus a blob (the pq codec)."""
    return "codes" in table_schema.names


def code_bytes(table_schema: pa.Schema) -> int:
    """Bytes of one patch's code (0 for an exact store)."""
    if not is_coded(table_schema):
        return 0
    _, frames, patches = dims(table_schema)
    return table_schema.field("codes").type.list_size // (frames * patches)


def bytes_per_video(dim: int, frames: int, patches: int, codes: int = 0) -> dict[str, int]:
    """Raw feature bytes a video costs, per part (before Lance's overhead): ``hot`` is what
    stage 2 reads for every candidate, ``cold`` what it reads only where codes point (the pq
    codec's exact patches; 0 for exact, whose patches are hot)."""
    parts = {"video": 4 * dim, "frames": 2 * frames * dim, "temporal": 2 * frames * dim,
             "mask": frames, "patches": 2 * frames * patches * dim,
             "codes": frames * patches * codes}
    hot = parts["video"] + parts["frames"] + parts["temporal"] + parts["mask"]
    if codes:
        return {**parts, "hot": hot + parts["codes"], "cold": parts["patches"]}
    return {**parts, "hot": hot + parts["patches"], "cold": 0}


def create(uri: str, dim: int, frames: int, patches: int,
           options: dict[str, str] | None = None) -> lance.LanceDataset:
    """An empty exact store at ``uri`` (a pq store is made by re-coding one: ``recode``)."""
    table_schema = schema(dim, frames, patches)
    return lance.write_dataset(table_schema.empty_table(), uri, schema=table_schema,
                               storage_options=options or None)


def open_dataset(uri: str, version: int | None = None,
                 options: dict[str, str] | None = None) -> lance.LanceDataset:
    """Open the store, turning Lance's failures (missing, unreadable, newer format) into one
    clear error naming it."""
    try:
        return lance.dataset(uri, version=version, storage_options=options or None)
    except (OSError, ValueError, RuntimeError) as err:
        raise EercfError(f"cannot read the Lance dataset {uri}: {_first_line(err)} (a dataset "
                         f"written by a newer Lance needs a newer pylance)") from err


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__


def _fixed_list(values: np.ndarray, size: int) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1)), size)


def _as_numpy(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    return t.detach().to("cpu", dtype).contiguous().numpy()


def to_table(table_schema: pa.Schema, ids: Sequence[str], uris: Sequence[str | None],
             durations: Sequence[float | None], timestamps: Sequence[Sequence[float]],
             features: "VideoFeatures", metadata: Sequence[dict[str, Any] | None] | None,
             codec: "PQCodec | None" = None,
             spans: Sequence[tuple[float, float] | None] | None = None) -> pa.Table:
    """One Arrow table of rows (whole videos, or with ``spans`` segments of them), checked
    against the store's layout (a pq store needs the ``codec`` that encodes its patches)."""
    dim, frames, patches = dims(table_schema)
    n = len(features)
    for name, values in (("ids", ids), ("uris", uris), ("durations", durations),
                         ("timestamps", timestamps)):
        if len(values) != n:
            raise EercfError(f"{name} has {len(values)} entries for {n} videos")
    if metadata is not None and len(metadata) != n:
        raise EercfError(f"metadata has {len(metadata)} entries for {n} videos")
    spans = list(spans) if spans is not None else [None] * n
    if len(spans) != n:
        raise EercfError(f"spans has {len(spans)} entries for {n} videos")
    if any(s is not None for s in spans) and not has_spans(table_schema):
        raise EercfError("this store predates segments: add_span_columns first")
    for video_id, span in zip(ids, spans):
        if span is not None and not (math.isfinite(span[0]) and span[1] > span[0] >= 0):
            raise EercfError(f"video {video_id!r}: segment span {span} is not 0 <= start < end")
    expected = {"video": (n, dim), "frames": (n, frames, dim), "temporal": (n, frames, dim),
                "patches": (n, frames, patches, dim), "mask": (n, frames)}
    for name, shape in expected.items():
        got = tuple(getattr(features, name).shape)
        if got != shape:
            raise EercfError(f"features.{name} has shape {got}, this index stores {shape} "
                             f"(dim {dim}, {frames} frames, {patches} patches)")
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise EercfError(f"video ids must be non-empty strings, got {bad[0]!r}")
    mask = _as_numpy(features.mask, torch.bool)
    if not mask.any(axis=1).all():
        raise EercfError(f"video {ids[int(np.flatnonzero(~mask.any(axis=1))[0])]!r} has no real frame")
    stamps = np.full((n, frames), np.nan, dtype=np.float32)
    for row, (video_id, times) in enumerate(zip(ids, timestamps)):
        times = np.asarray(times, dtype=np.float32).reshape(-1)
        real = np.flatnonzero(mask[row])
        if len(times) != len(real) and len(times) > real[-1]:
            times = times[real]  # one timestamp per frame slot: keep the real frames'
        if len(times) != len(real):
            raise EercfError(f"video {video_id!r}: {len(times)} timestamps for {len(real)} real frames")
        stamps[row, real] = times
    try:
        meta = [None if m is None else json.dumps(m) for m in (metadata or [None] * n)]
    except (TypeError, ValueError) as err:
        raise EercfError(f"metadata must be JSON-serialisable: {err}") from err
    columns = {
        "id": pa.array(list(ids), pa.string()),
        "uri": pa.array([None if u is None else str(u) for u in uris], pa.string()),
        "duration": pa.array([None if d is None or not math.isfinite(d) else float(d)
                              for d in durations], pa.float64()),
        "num_frames": pa.array(mask.sum(axis=1).astype(np.int32)),
        "mask": _fixed_list(mask, frames),
        "timestamps": _fixed_list(stamps, frames),
        "video": _fixed_list(_as_numpy(features.video, torch.float32), dim),
        "frames": _fixed_list(_as_numpy(features.frames, torch.float16), frames * dim),
        "temporal": _fixed_list(_as_numpy(features.temporal, torch.float16), frames * dim),
        "metadata": pa.array(meta, pa.string()),
        "segment_start": pa.array([None if s is None else float(s[0]) for s in spans], pa.float64()),
        "segment_end": pa.array([None if s is None else float(s[1]) for s in spans], pa.float64()),
    }
    stored = _as_numpy(features.patches, torch.float16)
    if is_coded(table_schema):
        if codec is None:
            raise EercfError("this store keeps pq codes: adding to it needs its codebook")
        codes = codec.encode(stored.reshape(-1, dim)).reshape(n, -1)
        columns["codes"] = _fixed_list(codes, codes.shape[1])
        columns["patches"] = pa.array([row.tobytes() for row in stored], pa.large_binary())
    else:
        columns["patches"] = _fixed_list(stored, frames * patches * dim)
    return pa.table({name: columns[name] for name in table_schema.names}, schema=table_schema)


def column_array(table: pa.Table, name: str, writable: bool = True) -> np.ndarray:
    """A fixed-size-list column as one array ``[rows, size]`` (read-only and, for a column in
    one chunk, zero-copy when ``writable`` is False)."""
    column = table.column(name)
    column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False, writable=writable)
    return values.reshape(len(column), -1)


def video_vectors(dataset: lance.LanceDataset) -> np.ndarray:
    """Every video vector ``[N, D]`` fp32, in row-offset order (the FAISS labels)."""
    table = dataset.to_table(columns=["video"], scan_in_order=True)
    dim = dataset.schema.field("video").type.list_size
    if table.num_rows == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(column_array(table, "video"), dtype=np.float32)


@dataclass
class Rows:
    """Per-video information of some rows of the store (no features)."""

    ids: list[str]
    uris: list[str | None]
    durations: list[float | None]
    timestamps: np.ndarray  # [n, F], NaN where masked
    metadata: list[dict[str, Any] | None]
    spans: list[tuple[float, float] | None]  # a segment's span in its video; None: whole

    @classmethod
    def from_table(cls, table: pa.Table) -> "Rows":
        n = table.num_rows
        if "segment_start" in table.column_names:
            spans = [None if a is None else (a, b) for a, b in zip(
                table.column("segment_start").to_pylist(), table.column("segment_end").to_pylist())]
        else:
            spans = [None] * n
        return cls(ids=table.column("id").to_pylist(), uris=table.column("uri").to_pylist(),
                   durations=table.column("duration").to_pylist(),
                   timestamps=column_array(table, "timestamps"),
                   metadata=[None if m is None else json.loads(m)
                             for m in table.column("metadata").to_pylist()], spans=spans)

    def concat(self, other: "Rows") -> "Rows":
        return Rows(ids=self.ids + other.ids, uris=self.uris + other.uris,
                    durations=self.durations + other.durations,
                    timestamps=np.concatenate([self.timestamps, other.timestamps]),
                    metadata=self.metadata + other.metadata, spans=self.spans + other.spans)

    def select(self, at: Sequence[int]) -> "Rows":
        return Rows(ids=[self.ids[i] for i in at], uris=[self.uris[i] for i in at],
                    durations=[self.durations[i] for i in at], timestamps=self.timestamps[at],
                    metadata=[self.metadata[i] for i in at], spans=[self.spans[i] for i in at])


def take_rows(dataset: lance.LanceDataset, offsets: Sequence[int]) -> Rows:
    """Id, uri, duration, timestamps and metadata of the rows at ``offsets``."""
    return Rows.from_table(dataset.take(list(map(int, offsets)),
                                        columns=info_columns(dataset.schema)))


def _readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over Arrow's read-only buffer: only ever read (scoring copies from it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def take_features(dataset: lance.LanceDataset, offsets: Sequence[int] | np.ndarray,
                  device: torch.device | str = "cpu", info: bool = True
                  ) -> tuple["VideoFeatures", Rows | None]:
    """Stage 2's read: the features (and with ``info`` the :class:`Rows` information) of only
    the rows at ``offsets``, in that order (ascending offsets read many times faster). The
    fine levels come back in fp16, exactly as stored (``VideoFeatures.as_stored()`` holds the
    same values in fp32), and on the CPU they are views of the read buffers, not copies:
    read them, never write them. Scoring widens them to fp32 a candidate at a time."""
    from ..model import VideoFeatures

    columns = list(FEATURE_COLUMNS) + (info_columns(dataset.schema) if info else [])
    table = dataset.take(list(map(int, offsets)), columns=columns)
    dim, frames, patches = dims(table.schema)
    n, device = table.num_rows, torch.device(device)
    shapes = {"video": (n, dim), "frames": (n, frames, dim), "temporal": (n, frames, dim),
              "patches": (n, frames, patches, dim)}
    levels = {name: _readonly_tensor(column_array(table, name, writable=False)).view(shape)
              .to(device) for name, shape in shapes.items()}
    mask = torch.from_numpy(column_array(table, "mask")).to(device)
    return VideoFeatures(mask=mask, **levels), Rows.from_table(table) if info else None


def take_hot(dataset: lance.LanceDataset, offsets: Sequence[int] | np.ndarray,
             device: torch.device | str = "cpu", info: bool = True
             ) -> tuple["VideoFeatures", torch.Tensor, Rows | None]:
    """Stage 2's read under pq: what :func:`take_features` reads but the patches, which come
    as their codes ``uint8 [n, F*P, M]`` (the features' ``patches`` is an empty ``[n, F, 0,
    D]``); the exact patches stay in the store for :func:`read_patches`."""
    from ..model import VideoFeatures

    columns = list(HOT_COLUMNS) + (info_columns(dataset.schema) if info else [])
    table = dataset.take(list(map(int, offsets)), columns=columns)
    dim, frames, patches = dims(dataset.schema)
    n, device = table.num_rows, torch.device(device)
    shapes = {"video": (n, dim), "frames": (n, frames, dim), "temporal": (n, frames, dim)}
    levels = {name: _readonly_tensor(column_array(table, name, writable=False)).view(shape)
              .to(device) for name, shape in shapes.items()}
    codes = torch.from_numpy(column_array(table, "codes")).view(n, frames * patches, -1).to(device)
    mask = torch.from_numpy(column_array(table, "mask")).to(device)
    empty = torch.zeros(n, frames, 0, dim, dtype=torch.float16, device=device)
    return (VideoFeatures(mask=mask, patches=empty, **levels), codes,
            Rows.from_table(table) if info else None)


def plan_ranges(offsets: Sequence[int] | np.ndarray, index: torch.Tensor, width: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The byte ranges holding the patches at positions ``index [K, R]`` (ascending, in
    ``F * P``) of the rows at ``offsets``, ``width`` bytes a patch: one range per run of
    consecutive positions (a whole frame is one), as ``(rows, starts, lengths)``, in the
    order of ``index``. Both cold-tier readers read by this plan."""
    positions = index.cpu().numpy().astype(np.int64)
    starts = np.ones(positions.shape, dtype=bool)  # a run starts at each row's first position
    starts[:, 1:] = np.diff(positions, axis=1) != 1  # and wherever a position does not follow on
    first = np.flatnonzero(starts.ravel())
    lengths = np.diff(np.append(first, positions.size))
    rows = np.asarray(offsets, dtype=np.int64)[first // max(1, positions.shape[1])]
    return rows, positions.ravel()[first] * width, lengths * width


def read_patches(dataset: lance.LanceDataset, offsets: Sequence[int], index: torch.Tensor,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The exact fp16 patches ``[K, R, D]`` at positions ``index [K, R]`` (ascending, in
    ``F * P``) of the rows at ``offsets``: a pq store's cold tier, read as one byte range per
    run of consecutive positions (:func:`plan_ranges`), all in one Lance call."""
    dim = dims(dataset.schema)[0]
    if index.numel() == 0:
        return torch.zeros(*index.shape, dim, dtype=torch.float16, device=device)
    rows, starts, lengths = plan_ranges(offsets, index, 2 * dim)
    requests = list(zip(rows.tolist(), starts.tolist(), lengths.tolist()))
    parts = dataset.read_blob_ranges("patches", requests, selector="indices")
    # one copy into one array (bytes.join of many chunks is several times slower)
    values = np.concatenate([np.frombuffer(chunk, dtype=np.float16) for _, _, chunk in parts])
    return torch.from_numpy(values.reshape(*index.shape, dim)).to(device)


def read_whole(dataset: lance.LanceDataset, offsets: Sequence[int], per_row: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Every exact patch ``[K, per_row, D]`` (``per_row = F * P``) of the rows at ``offsets``:
    one byte range a row (:func:`read_patches` of every position)."""
    return read_patches(dataset, offsets, torch.arange(per_row).expand(len(offsets), -1), device)


def matching_offsets(dataset: lance.LanceDataset, expression: str) -> np.ndarray:
    """Row offsets (ascending) of the rows matching a Lance filter ``expression`` (SQL over
    ``id``, ``uri``, ``duration`` and ``metadata``, the JSON text of each video's metadata)."""
    try:
        table = dataset.to_table(columns=["_rowoffset"], filter=expression, scan_in_order=True)
    except Exception as err:  # Lance raises ValueError / IOError / its own errors for a bad filter
        reason = str(err).split(", /")[0].splitlines()[0][:300]
        raise EercfError(f"invalid filter {expression!r}: {reason}") from None
    return np.sort(table.column("_rowoffset").to_numpy().astype(np.int64))


def all_ids(dataset: lance.LanceDataset) -> list[str]:
    """The id of every row, in store order (a segmented video's id once per segment)."""
    return dataset.to_table(columns=["id"], scan_in_order=True).column("id").to_pylist()


def video_ids(dataset: lance.LanceDataset) -> list[str]:
    """Every video id once, in the store order of each video's first row."""
    return list(dict.fromkeys(all_ids(dataset)))


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal for a Lance filter."""
    return "'" + value.replace("'", "''") + "'"
