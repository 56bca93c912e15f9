"""Does a fine-store codec keep what search reports? For a trained checkpoint and a dataset's
test split: the test videos are indexed twice through a real `VideoIndex` (the `exact` codec
and `pq`, its codebook trained on them as `eercf index` trains it), every test caption is
searched in both, and the script reports t2v R@1 of each, and for the hits both return in their
top 10, how often the reported *where* (best frame and patch cell) and *when* (the moment) agree
and the scores are identical, how often the whole top-10 list is,
and how often pq's *where* is a co-best patch: its exact product within 0.005 of the best one's
(at the patch gate's temperature of 0.01 the two then weigh within a factor 1.65; trained
features hold many near-identical patches, background ones above all, among which "the" best
cell is a tie that no code can break the same way).

    python benchmarks/codec_accuracy.py --checkpoint RUN --data D [--subvector 16] [--frames-read 4]
        [--exact-candidates 10] [--name N]

Results: benchmarks/results/codec_accuracy.json (one row per checkpoint and setting, replaced
on a rerun).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--subvector", type=int, default=None, help="pq dimensions per code byte")
    parser.add_argument("--frames-read", type=int, default=None,
                        help="frames per candidate whose patches are read exactly")
    parser.add_argument("--exact-candidates", type=int, default=None,
                        help="candidates a query's exact pass reads whole (default: search's, "
                             "codecs.EXACT_CANDIDATES at k = 10)")
    parser.add_argument("--name", default=None, help="a label for the row (default: the data folder)")
    args = parser.parse_args()

    import eercf
    from eercf.data.datasets import load_dataset
    from eercf.evaluation.evaluator import encode_records
    from eercf.index import VideoIndex, codecs

    if args.subvector:
        codecs.SUBVECTOR = args.subvector
    if args.frames_read:
        codecs.FRAMES_READ = args.frames_read
    exact_read = codecs.exact_width(args.exact_candidates, 10)  # search's width at k = 10
    model = eercf.load_model(args.checkpoint)
    encoded = encode_records(model, load_dataset("msrvtt", args.data, "test"), progress=False)
    n = len(encoded.video_ids)
    hits = {}
    with tempfile.TemporaryDirectory() as tmp:
        for codec in ("exact", "pq"):
            index = VideoIndex.create(Path(tmp) / codec, model, codec=codec)
            stamps = [[float(i) for i in range(int(m.sum()))] for m in encoded.videos.mask]
            index.add(encoded.video_ids, [None] * n, [float(encoded.videos.mask.shape[1])] * n,
                      stamps, encoded.videos)
            assert index.apply_codec() and index.stored_codec() == codec
            started = time.perf_counter()
            hits[codec] = index.search_encoded(encoded.text, k=10, model=model,
                                               exact_candidates=exact_read)
            seconds = time.perf_counter() - started
            print(f"{codec}: {index.stats()['bytes_per_video']} searched in {seconds:.1f} s")
    truth = [encoded.video_ids[i] for i in encoded.caption_video.tolist()]
    r1 = {c: 100 * np.mean([r.hits[0].video_id == t for r, t in zip(hits[c], truth)]) for c in hits}
    import torch

    patches = encoded.videos.as_stored().patches
    per_frame, side = patches.shape[2], int(patches.shape[2] ** 0.5)
    flat = patches.reshape(n, -1, patches.shape[-1]).float()
    position = {v: i for i, v in enumerate(encoded.video_ids)}
    where, when, near, same_score = [], [], [], []
    same_list = [[h.video_id for h in e.hits] == [h.video_id for h in c.hits]
                 for e, c in zip(hits["exact"], hits["pq"])]
    for q, (exact, coded) in enumerate(zip(hits["exact"], hits["pq"])):
        by_id = {h.video_id: h for h in coded.hits}
        for h in exact.hits:
            other = by_id.get(h.video_id)
            if other is None or h.where is None or other.where is None:
                continue
            same_score.append(h.score == other.score)
            where.append((h.where.frame, h.where.row, h.where.col)
                         == (other.where.frame, other.where.row, other.where.col))
            when.append((h.moment.start, h.moment.end) == (other.moment.start, other.moment.end))
            products = flat[position[h.video_id]] @ encoded.text[q].float()
            cell = other.where.frame * per_frame + other.where.row * side + other.where.col
            near.append(bool(products.max() - products[cell] <= 0.005))
    row = {"name": args.name or args.data.name, "checkpoint": str(args.checkpoint),
           "subvector": codecs.SUBVECTOR, "frames_read": codecs.FRAMES_READ,
           "exact_candidates": exact_read,
           "t2v_R1": {c: round(v, 1) for c, v in r1.items()},
           "where_agrees": round(100 * float(np.mean(where)), 1),
           "where_co_best": round(100 * float(np.mean(near)), 1),
           "when_agrees": round(100 * float(np.mean(when)), 1), "pairs": len(where),
           "score_identical": round(100 * float(np.mean(same_score)), 1),
           "top10_identical": round(100 * float(np.mean(same_list)), 1),
           "exact_pass": "whole rows"}
    print(json.dumps(row))
    path = RESULTS / "codec_accuracy.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    def key(r: dict) -> tuple:
        return r["name"], r["subvector"], r.get("frames_read"), r.get("exact_candidates", 10)
    rows = [r for r in rows if key(r) != key(row)] + [row]
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
