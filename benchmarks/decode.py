"""Videos per second to 12 sampled, preprocessed 224 px frames: eercf's sampler (seek past
unneeded keyframes, skip non-reference frames far from a target, convert and resize only the
chosen frames) against decoding every frame to RGB and picking from them (what CLIP4Clip's
OpenCV loader does), both through the same DataLoader with 1 and 2 worker processes.

The items are the two real MSR-VTT clips (11 s and 14 s, 320x240 H.264) repeated. Each
configuration runs one warm-up epoch, then the configurations take turns for ``--rounds``
timed epochs (the machine is shared and noisy; turns spread the noise over all of them);
the fastest epoch of each (the one other processes disturbed least) gives videos/s, the
median is kept beside it. Because other processes' load moves wall-clock figures, the run also
measures the CPU seconds each item costs in one process (items alternating between the two
methods), a ratio the machine's load hardly moves.

    python benchmarks/decode.py [--items 20] [--frames 12] [--size 224] [--rounds 3]

Writes benchmarks/results/decode.json and decode.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import av
import numpy as np
import torch

from eercf.data.datasets import VideoRecord
from eercf.data.loader import VideoClips, make_loader
from eercf.data.clips import SampledClip, preprocess, sample_times
from eercf.model import VideoTransform

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CLIPS = ROOT.parents[1] / "shared" / "data" / "msrvtt_sample" / "videos"


class FullDecodeClips(VideoClips):
    """The reference: every frame decoded and converted to RGB, then the frame shown at each
    sample time picked and preprocessed (same sample times as eercf's sampler)."""

    def clip(self, video_index: int) -> SampledClip:
        path, t = self.records[video_index].path, self.transform
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            start = stream.start_time or 0
            decoded = [(float((f.pts - start) * stream.time_base), f.to_ndarray(format="rgb24"))
                       for f in container.decode(stream)]
            duration = float(stream.duration * stream.time_base)
        times = [t for t, _ in decoded]
        chosen = sorted({max(0, np.searchsorted(times, target + 1e-6) - 1)
                         for target in sample_times(duration, t.frames, t.fps)})
        frames = torch.zeros(t.frames, 3, t.image_size, t.image_size)
        frames[:len(chosen)] = preprocess([decoded[i][1] for i in chosen], t.image_size,
                                          t.mean, t.std)
        mask = torch.zeros(t.frames, dtype=torch.bool)
        mask[:len(chosen)] = True
        return SampledClip(frames=frames, mask=mask, timestamps=[round(times[i], 6) for i in chosen],
                           duration=duration, source=str(path))


def _epoch(loader) -> tuple[float, list[list[float]]]:
    start = time.perf_counter()
    timestamps = [t for batch in loader for t in batch["timestamps"]]
    return time.perf_counter() - start, timestamps


def _cpu_seconds(datasets: dict[str, VideoClips], items: int) -> dict[str, list[float]]:
    """CPU time of each item, the methods alternating item by item."""
    spent: dict[str, list[float]] = {name: [] for name in datasets}
    for index in range(items):
        for name, dataset in datasets.items():
            start = time.process_time()
            dataset[index]
            spent[name].append(time.process_time() - start)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)

    clips = sorted(CLIPS.glob("*.mp4"))
    records = [VideoRecord(f"{p.stem}-{i}", p, [""], "test")
               for i, p in zip(range(args.items), clips * args.items)]
    transform = VideoTransform(frames=args.frames, image_size=args.size)
    loaders = {(mode, workers): make_loader(cls(records, transform), batch_size=args.batch,
                                            workers=workers)
               for mode, cls in (("sampled", VideoClips), ("full", FullDecodeClips))
               for workers in (1, 2)}
    seconds = {key: [] for key in loaders}
    timestamps = {}
    for key, loader in loaders.items():
        _, timestamps[key] = _epoch(loader)  # warm-up: starts the workers
    for _ in range(args.rounds):
        for key, loader in loaders.items():
            seconds[key].append(_epoch(loader)[0])

    rows = []
    for (mode, workers), times in seconds.items():
        best, median = min(times), statistics.median(times)
        rows.append({"mode": mode, "workers": workers, "epoch_seconds": times,
                     "videos_per_second": args.items / best,
                     "videos_per_second_median": args.items / median})
        print(f"{mode:8s} workers={workers}: {args.items / best:6.2f} videos/s best, "
              f"{args.items / median:6.2f} median (epochs {', '.join(f'{t:.2f}' for t in times)} s)")
    speed = {(r["mode"], r["workers"]): r["videos_per_second"] for r in rows}
    speedup = {w: speed[("sampled", w)] / speed[("full", w)] for w in (1, 2)}
    for w, ratio in speedup.items():
        print(f"sampled / full with {w} worker(s): {ratio:.2f}x")
    same = all(timestamps[("sampled", w)] == timestamps[("full", w)] for w in (1, 2))
    print(f"both pick frames at the same times: {same}")
    cpu = _cpu_seconds({"sampled": VideoClips(records, transform),
                        "full": FullDecodeClips(records, transform)}, args.items)
    cpu_median = {name: statistics.median(times) for name, times in cpu.items()}
    cpu_ratio = cpu_median["full"] / cpu_median["sampled"]
    print(f"CPU seconds per video (median of {args.items}): sampled {cpu_median['sampled']:.3f}, "
          f"full {cpu_median['full']:.3f}, ratio {cpu_ratio:.2f}x")

    RESULTS.mkdir(exist_ok=True)
    result = {"items": args.items, "clips": [p.name for p in clips], "frames": args.frames,
              "image_size": args.size, "batch": args.batch, "rounds": args.rounds,
              "results": rows, "speedup": {str(w): r for w, r in speedup.items()},
              "same_timestamps": same, "cpu_seconds_per_video": cpu,
              "cpu_seconds_median": cpu_median, "cpu_speedup": cpu_ratio,
              "torch": torch.__version__, "av": av.__version__,
              "machine": platform.platform(), "processor": platform.processor()}
    (RESULTS / "decode.json").write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for offset, mode, color in ((-0.2, "sampled", "tab:blue"), (0.2, "full", "tab:gray")):
        values = [speed[(mode, w)] for w in (1, 2)]
        ax.bar([w + offset for w in (1, 2)], values, width=0.4, color=color,
               label="eercf sampler" if mode == "sampled" else "decode every frame, pick")
    for w in (1, 2):
        ax.annotate(f"{speedup[w]:.1f}x", (w - 0.2, speed[("sampled", w)]), ha="center",
                    va="bottom")
    ax.set_ylim(0, max(speed.values()) * 1.2)
    ax.set_xticks([1, 2], ["1 worker", "2 workers"])
    ax.set_ylabel("videos / s")
    ax.set_title(f"{args.frames} frames at {args.size} px, MSR-VTT clips (11-14 s)\n"
                 f"CPU per video: {cpu_median['sampled']:.3f} s vs {cpu_median['full']:.3f} s "
                 f"({cpu_ratio:.1f}x)", fontsize=10)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(RESULTS / "decode.png", dpi=120)
    print(f"wrote {RESULTS / 'decode.json'} and {RESULTS / 'decode.png'}")


if __name__ == "__main__":
    main()
