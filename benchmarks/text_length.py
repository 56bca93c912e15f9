"""Text tower time on real captions: run up to the batch's last EOT (what ``encode_text`` does)
against the full 32-token context (what it did before). The full-length pass is forced by
adding one 32-token caption to the same batch, so both timings come from one run, the same
weights and the same threads. ViT-B/32 text tower, random weights, OpenAI's BPE, the MSR-VTT
1k-A test captions from ../shared/data.

    python benchmarks/text_length.py [--batch 256] [--repeats 5] [--model ViT-B-32]

Writes benchmarks/results/text_length.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import torch

from eercf.model.config import get_model_config
from eercf.model import EERCF
from eercf.model.tokenizer import CLIPTokenizer

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data"


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="ViT-B-32")
    args = parser.parse_args()
    with open(SHARED / "msrvtt_sample" / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        captions = [row["sentence"] for row in csv.DictReader(f)][: args.batch]
    model = EERCF(get_model_config(args.model)).eval()
    model.tokenizer = CLIPTokenizer.from_bpe_vocab(SHARED / "clip" / "bpe_simple_vocab_16e6.txt.gz")
    ids = model.tokenize(captions)
    context = ids.shape[1]
    longest = model.tokenize([" ".join(["word"] * context)])  # EOT at the last position
    padded = torch.cat([ids, longest])
    lengths = (ids.argmax(dim=-1) + 1).float()
    with torch.inference_mode():
        trimmed_s = best_time(lambda: model.encode_text(torch.cat([ids, ids[:1]])), args.repeats)
        full_s = best_time(lambda: model.encode_text(padded), args.repeats)
    out = {"model": args.model, "captions": len(captions) + 1, "context": context,
           "mean_tokens": round(float(lengths.mean()), 1), "batch_max_tokens": int(lengths.max()),
           "trimmed_seconds": round(trimmed_s, 4), "full_context_seconds": round(full_s, 4),
           "speedup": round(full_s / trimmed_s, 2), "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine()}
    print(json.dumps(out, indent=2))
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "text_length.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
