"""Shot detection on full-HD video (issue 16): the time ``eercf.data.shots.video_shots`` takes
to read a long video once, against the decoding alone, and the cuts it finds.

The video: SECONDS of 1920x1080 at 25 fps, scenes of a colour layout with a fine texture and a
moving box, cut every 7.5 s (libx264, ultrafast). One thread for numpy; the decoder threads as
``video_shots`` lets it.

    python benchmarks/shot_detection.py [--seconds 60] [--workdir /tmp]

Writes benchmarks/results/shot_detection.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from eercf.data.shots import MIN_SHOT, video_shots

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT, FPS, SHOT = 1920, 1080, 25, 7.5


def make_video(path: Path, seconds: int) -> list[float]:
    """Write the video; returns its true cut times (those leaving a shot of at least
    ``MIN_SHOT`` after them: a shorter last shot joins the one before)."""
    rng = np.random.default_rng(0)

    def scene() -> np.ndarray:
        layout = rng.integers(0, 255, (3, 4, 3)).astype(np.float32)
        big = layout.repeat(HEIGHT // 3, 0).repeat(WIDTH // 4, 1)
        fine = rng.integers(-40, 40, (HEIGHT // 4, WIDTH // 4, 1)).repeat(4, 0).repeat(4, 1)
        return np.clip(big + fine, 0, 255).astype(np.uint8)

    scenes = [scene() for _ in range(8)]
    per_shot = int(SHOT * FPS)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast"}
        for k in range(seconds * FPS):
            image = scenes[(k // per_shot) % len(scenes)].copy()
            x = (k * 9) % (WIDTH - 200)
            image[400:600, x:x + 200] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    cuts = [k * per_shot / FPS for k in range(1, -(-seconds * FPS // per_shot))]
    return [c for c in cuts if seconds - c >= MIN_SHOT]


def decode_only(path: Path) -> float:
    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        path = Path(work) / "hd.mp4"
        truth = make_video(path, args.seconds)
        video_shots(path, float(args.seconds))  # warm: imports, page cache
        started = time.perf_counter()
        shots = video_shots(path, float(args.seconds))
        seconds = time.perf_counter() - started
        decode = decode_only(path)
    found = [round(start, 3) for start, _ in shots[1:]]
    result = {"video": f"{WIDTH}x{HEIGHT} {FPS} fps, {args.seconds} s", "true_cuts": truth,
              "found_cuts": found, "exact": len(found) == len(truth) and all(
                  abs(a - b) <= 1.0 / FPS + 1e-6 for a, b in zip(found, truth)),
              "video_shots_seconds": round(seconds, 2), "decode_only_seconds": round(decode, 2),
              "minutes_per_hour_of_video": round(seconds * 3600 / args.seconds / 60, 1)}
    out = HERE / "results" / "shot_detection.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result), "\nwrote", out)


if __name__ == "__main__":
    main()
