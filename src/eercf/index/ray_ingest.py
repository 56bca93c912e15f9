"""Distributed ingest on Ray Data (``eercf index SOURCE --ray [ADDRESS]``): the same rows as
``ingest``, decoded and encoded across a cluster.

- decoding runs as CPU tasks (``map_batches`` of a function), each sampling its videos with the
  transform the index records;
- encoding runs in an actor pool (the model loaded once per actor, one GPU each where the
  cluster has GPUs), and each actor writes its batch as Lance fragments straight into the
  store (``lance.fragment.write_fragments``: data files, not yet part of any version);
- the driver commits the fragments every ``commit_every`` videos (one ``Append`` per commit),
  so a crash loses at most the uncommitted videos and a rerun skips what is in. A video that
  cannot be read is reported and skipped, as in ``ingest``;
- a long video's segments (planned on the driver, as ``ingest`` plans them) are written as
  fragments of their own, which the driver commits only once every segment of that video is
  written, and drops (files no version names) when one of them failed: a video is in the
  index whole or not at all.

Ray's own ``Dataset.write_lance`` is not used: it commits only at the end, and fails with
current pylance (ray issue 65129).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..errors import EercfError
from . import store
from .ingest import record_metadata, settle_codec
from .segments import plan_rows

if TYPE_CHECKING:
    from ..data.datasets import VideoRecord
    from ..model import VideoTransform
    from .video_index import VideoIndex

COMMIT_EVERY = 2000   # videos per commit


def _decode(batch: dict[str, np.ndarray], transform: "VideoTransform") -> dict[str, Any]:
    """Ray task: sample the videos of ``batch`` (a failed one keeps a row with its error)."""
    from pathlib import Path

    from ..data.datasets import VideoRecord
    from ..data.loader import VideoClips

    records = [VideoRecord(str(v), Path(str(p)), [], "ray", None if not s else tuple(json.loads(s)))
               for v, p, s in zip(batch["video_id"], batch["path"], batch["span"])]
    clips = VideoClips(records, transform)
    shape = (transform.frames, 3, transform.image_size, transform.image_size)
    out: dict[str, list] = {k: [] for k in ("video_id", "path", "error", "frames", "mask",
                                            "timestamps", "duration")}
    for i, record in enumerate(records):
        item = clips[i]
        failed = item.get("failed")
        out["video_id"].append(record.video_id)
        out["path"].append(str(record.path))
        out["error"].append(failed["reason"] if failed else "")
        frames = np.zeros(shape, np.float32) if failed else np.asarray(item["frames"], np.float32)
        out["frames"].append(frames)
        out["mask"].append(np.zeros(shape[0], bool) if failed else np.asarray(item["mask"], bool))
        out["timestamps"].append("[]" if failed else json.dumps([float(t) for t in item["timestamps"]]))
        out["duration"].append(float("nan") if failed or item["duration"] is None
                               else float(item["duration"]))
    out["metadata"] = [str(m) for m in batch["metadata"]]  # passed through to the encoder
    out["span"] = [str(s) for s in batch["span"]]
    out["hold"] = [str(h) for h in batch["hold"]]
    return {k: np.stack(v) if k in ("frames", "mask") else np.asarray(v) for k, v in out.items()}


class _Encoder:
    """Ray actor: encode decoded videos and write them as fragments of the index's store."""

    def __init__(self, index_uri: str, source: str):
        import torch

        from ..weights import load_model
        from .video_index import VideoIndex

        self.index = VideoIndex.open(index_uri)
        self.model = load_model(source, device="cuda" if torch.cuda.is_available() else None)
        self.model.eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        import lance
        import torch

        from ..data.sources import stored_uri

        ok = np.flatnonzero(batch["error"] == "")
        failed = [{"video": str(batch["video_id"][i]), "path": str(batch["path"][i]),
                   "error": str(batch["error"][i])} for i in np.flatnonzero(batch["error"] != "")]
        fragments: list[dict[str, str]] = []
        ids = [str(batch["video_id"][i]) for i in ok]
        spans = [tuple(json.loads(batch["span"][i])) if batch["span"][i] else None for i in ok]
        if len(ok):
            with torch.inference_mode():
                features = self.model.encode_video(
                    torch.from_numpy(batch["frames"][ok]).to(self.model.device),
                    torch.from_numpy(batch["mask"][ok]).to(self.model.device)).to("cpu", torch.float32)
            dataset = self.index._dataset()
            durations = [None if np.isnan(batch["duration"][i]) else float(batch["duration"][i])
                         for i in ok]
            table = store.to_table(store.write_schema(dataset.schema), ids,
                                   [stored_uri(str(batch["path"][i])) for i in ok], durations,
                                   [json.loads(batch["timestamps"][i]) for i in ok], features,
                                   [json.loads(batch["metadata"][i]) for i in ok],
                                   self.index.pq_codec(dataset), spans)
            # whole videos share a fragment; each long video's segments get their own, so
            # that the driver can hold them back until the video is complete
            groups: dict[str, list[int]] = {}
            for row, (video_id, i) in enumerate(zip(ids, ok)):
                groups.setdefault(video_id if batch["hold"][i] else "", []).append(row)
            for video_id, rows in groups.items():
                written = lance.fragment.write_fragments(
                    table.take(rows), self.index.location.join(store.DATASET),
                    schema=table.schema, storage_options=self.index.location.options or None)
                fragments += [{"video": video_id, "fragment": json.dumps(f.to_json())}
                              for f in written]
        vectors = [{"video": ids[row], "span": spans[row], "vector": features.video[row].tolist()}
                   for row, i in enumerate(ok) if batch["hold"][i]] if len(ok) else []
        return {"fragments": [json.dumps(fragments)], "added": [json.dumps(ids)],
                "failed": [json.dumps(failed)], "vectors": [json.dumps(vectors)]}


def ray_ingest(index: "VideoIndex", records: Sequence["VideoRecord"], *, address: str | None,
               batch_size: int = 8, encoders: int | None = None,
               commit_every: int = COMMIT_EVERY, progress: bool = True) -> dict[str, Any]:
    """``ingest`` on Ray (see the module docstring): the same summary, ``commits`` added."""
    import lance
    import ray

    source = index.model_info.source
    if source is None:
        raise EercfError(f"index {index.folder} does not record where its model is: --ray "
                         "workers load the model themselves, so build the index with a saved "
                         "model (--model PATH)")
    if commit_every < 1:
        raise EercfError(f"--commit-every must be at least 1, got {commit_every}")
    model = index.model()
    index.check_model(model)
    transform = index.model_info.video_transform(model)
    started = time.perf_counter()
    summary: dict[str, Any] = {"added": 0, "segments": 0, "scenes": 0, "skipped": 0,
                               "failed": [], "commits": 0}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        try:
            ray.init(address=None if address in (None, "local") else address,
                     include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise EercfError(f"cannot reach the Ray cluster at {address}: {err}") from None
    gpus = int(ray.cluster_resources().get("GPU", 0))
    with index.writing():
        if index.segmenting is not None and not store.has_spans(index._dataset().schema):
            store.add_span_columns(index._dataset())  # as VideoIndex.add does on first use
        present = set(index.ids())
        todo = [r for r in records if r.video_id not in present]
        summary["skipped"] = len(records) - len(todo)
        rows, summary["failed"] = plan_rows(todo, index.segmenting)
        expected: dict[str, int] = {}
        for r in rows:
            expected[r.video_id] = expected.get(r.video_id, 0) + 1
        first = {r.video_id: r for r in reversed(rows)}
        pending: list = []          # fragments of whole videos, ready to commit
        held: dict[str, list] = {}  # a long video's fragments, until all its rows are in
        vectors: dict[str, list] = {}   # (span, video vector) of a long video's rows
        scenes_of: dict[str, int] = {}   # scene rows of a long video held for the second pass
        done: dict[str, int] = {}
        broken: set[str] = set()
        pending_videos = 0

        def commit() -> None:
            nonlocal pending, pending_videos
            if not pending:
                return
            dataset = index._dataset()
            lance.LanceDataset.commit(index.location.join(store.DATASET),
                                      lance.LanceOperation.Append(pending),
                                      read_version=dataset.version,
                                      storage_options=index.location.options or None)
            index.save_stage1()
            summary["added"] += pending_videos
            summary["commits"] += 1
            pending, pending_videos = [], 0

        def encode(rows: Sequence["VideoRecord"], desc: str, find_scenes: bool
                   ) -> list["VideoRecord"]:
            """Decode, encode and write ``rows``; with ``find_scenes``, returns the scene rows
            of the long videos that completed (their fragments held for a second pass)."""
            nonlocal pending_videos
            from lance.fragment import FragmentMetadata
            from tqdm import tqdm

            items = [{"video_id": r.video_id, "path": str(r.path),
                      "span": json.dumps(list(r.span)) if r.span else "",
                      "metadata": json.dumps(record_metadata(r)),
                      "hold": "1" if expected[r.video_id] > 1 else ""} for r in rows]
            ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // batch_size))
            ds = ds.map_batches(_decode, batch_size=batch_size, fn_kwargs={"transform": transform},
                                num_cpus=1)
            pool = encoders or max(1, gpus)
            ds = ds.map_batches(_Encoder, batch_size=batch_size, concurrency=pool,
                                num_gpus=1 if gpus else 0,
                                fn_constructor_kwargs={"index_uri": str(index.folder),
                                                       "source": source})
            later: list["VideoRecord"] = []
            with tqdm(total=len(rows), unit="row", desc=desc, disable=not progress) as bar:
                for row in ds.iter_rows():
                    added, failed = json.loads(row["added"]), json.loads(row["failed"])
                    for f in json.loads(row["fragments"]):
                        fragment = FragmentMetadata.from_json(f["fragment"])
                        (held.setdefault(f["video"], []) if f["video"] else pending).append(fragment)
                    for v in json.loads(row["vectors"]):
                        vectors.setdefault(v["video"], []).append((tuple(v["span"]), v["vector"]))
                    for item in failed:
                        if item["video"] not in broken:
                            summary["failed"].append(item)
                        broken.add(item["video"])
                    for video_id in added + [item["video"] for item in failed]:
                        done[video_id] = done.get(video_id, 0) + 1
                        if done[video_id] < expected[video_id]:
                            continue
                        if video_id in broken:
                            held.pop(video_id, None)  # its written segments stay out of every version
                            vectors.pop(video_id, None)
                            continue
                        parts = vectors.pop(video_id, [])
                        found = index.segmenting.scene_rows(
                            [replace(first[video_id], span=span) for span, _ in parts],
                            torch.tensor([v for _, v in parts])) if find_scenes and parts else []
                        if found:
                            expected[video_id] += len(found)
                            scenes_of[video_id] = len(found)
                            later += found
                            continue
                        fragments = held.pop(video_id, [])
                        pending.extend(fragments)
                        pending_videos += 1
                        summary["segments"] += expected[video_id] if fragments else 0
                        summary["scenes"] += scenes_of.pop(video_id, 0)
                    bar.update(len(added) + len(failed))
                    if pending_videos >= commit_every:
                        commit()
            return later

        if rows:
            later = encode(rows, "ray ingest", find_scenes=index.segmenting is not None)
            if later:
                encode(later, "ray ingest: scenes", find_scenes=False)
        commit()
        settle_codec(index, summary)
    summary["videos"] = len(index)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary["ray"] = {"address": address or "local", "gpus": gpus,
                      "encoders": encoders or max(1, gpus)}
    return summary

