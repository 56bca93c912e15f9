"""The README's demo, end to end at a small size: every step runs and the summary is complete."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "eercf.cli", "demo", "--out", str(out),
                           "--videos", "60", "--epochs", "1", "--queries", "2", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    for mode in ("video", "two_stage", "all_pairs"):
        assert set(summary["metrics"][mode]["t2v"]) >= {"R1", "R5", "R10", "R50", "MdR", "MnR"}
        assert summary["metrics"][mode]["seconds"] >= 0
    assert len(summary["searches"]) == 2
    for search in summary["searches"]:
        assert search["hits"] and search["expected"].startswith("video")
        best = search["hits"][0]
        assert best["moment"]["start"] <= best["moment"]["time"] <= best["moment"]["end"]
        check = search["check"]
        assert check["video"] == search["expected"] and check["rank"] >= 1
        assert check["stage1_rank"] >= 1 and check["moment"]
    for path in summary["paths"].values():
        assert Path(path).exists(), path
    assert "Retrieval on the synthetic test split" in proc.stderr
    assert "after stage 1" in proc.stderr and "searches find their video in the top 5" in proc.stderr
    # a second run reuses the benchmark and the model instead of redoing them
    again = subprocess.run([sys.executable, "-m", "eercf.cli", "demo", "--out", str(out),
                            "--videos", "60", "--queries", "1"], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the trained model" in again.stderr
