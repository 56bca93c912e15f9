"""Datasets, collate, sampler and frame cache of eercf.data.loader, on the real MSR-VTT clips
and frame folders plus broken files that must be reported once and skipped."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import eercf.data.loader as loader_module
from conftest import SHARED_DATA
from eercf.data.datasets import VideoRecord
from eercf.data.frames import FrameCache
from eercf.data.loader import CaptionPairs, EpochSampler, VideoClips, make_loader
from eercf.data.video import decode_clip, load_clip
from eercf.errors import EercfError
from eercf.model import VideoTransform

DATA = SHARED_DATA / "msrvtt_sample"
pytestmark = pytest.mark.needs_shared
SIZE = 32  # small frames keep these tests fast; decoding is the same at any size


def real_records() -> list[VideoRecord]:
    return [VideoRecord("video9770", DATA / "videos" / "video9770.mp4",
                        ["a person is connecting something to system", "a man plugs a cable"], "test"),
            VideoRecord("video9771", DATA / "videos" / "video9771.mp4",
                        ["a little girl does gymnastics"], "test"),
            VideoRecord("video7021", DATA / "frames" / "video7021",
                        ["baseball player hits ball"], "test")]


def broken_records(tmp_path: Path) -> list[VideoRecord]:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    return [VideoRecord("empty", tmp_path / "empty.mp4", ["nothing"], "test"),
            VideoRecord("text", tmp_path / "text.mp4", ["words", "more words"], "test")]


@pytest.mark.parametrize("workers", [0, 2])
def test_video_clips_skip_and_report_bad_videos(tmp_path, caplog, workers):
    records = real_records()[:2] + broken_records(tmp_path) + real_records()[2:]
    dataset = VideoClips(records, VideoTransform(frames=6, image_size=SIZE))
    loader = make_loader(dataset, batch_size=2, workers=workers)
    with caplog.at_level(logging.WARNING, logger="eercf.data"):
        for _epoch in range(2):
            batches = list(loader)
    assert [b["index"].tolist() for b in batches] == [[0, 1], [], [4]]
    first = batches[0]
    assert first["frames"].shape == (2, 6, 3, SIZE, SIZE) and first["mask"].all()
    assert first["video_id"] == ["video9770", "video9771"] and len(first["timestamps"][1]) == 6
    # the batch whose videos both failed keeps every key, with zero rows
    assert batches[1]["frames"].shape == (0, 6, 3, SIZE, SIZE)
    assert [f["video_id"] for f in batches[1]["failed"]] == ["empty", "text"]
    assert "empty.mp4: empty file" in batches[1]["failed"][0]["reason"]
    # reported once each, over two epochs
    skipped = [r.getMessage() for r in caplog.records if "skipped video" in r.getMessage()]
    assert len(skipped) == 2 and "text.mp4: not a readable video" in skipped[1]
    assert [f["video_id"] for f in loader.failures] == ["empty", "text"]


def test_items_match_load_clip():
    dataset = VideoClips(real_records(), VideoTransform(frames=4, image_size=SIZE, fps=1.0))
    item = dataset[1]
    clip = load_clip(DATA / "videos" / "video9771.mp4", num_frames=4, fps=1.0, image_size=SIZE)
    assert torch.equal(item["frames"], clip.frames) and item["timestamps"] == clip.timestamps
    assert item["path"].endswith("video9771.mp4") and item["index"] == 1


def test_caption_pairs_cover_every_caption(tmp_path):
    records = real_records() + broken_records(tmp_path)
    dataset = CaptionPairs(records, VideoTransform(frames=4, image_size=SIZE))
    assert len(dataset) == 7
    batches = list(make_loader(dataset, batch_size=4))
    assert batches[0]["caption"] == ["a person is connecting something to system",
                                     "a man plugs a cable", "a little girl does gymnastics",
                                     "baseball player hits ball"]
    assert batches[0]["video_index"].tolist() == [0, 0, 1, 2]
    assert torch.equal(batches[0]["frames"][0], batches[0]["frames"][1])
    assert batches[1]["frames"].shape[0] == 0 and len(batches[1]["failed"]) == 3


def test_frame_cache_serves_later_epochs(tmp_path, monkeypatch):
    records = real_records()
    dataset = VideoClips(records, VideoTransform(frames=5, image_size=SIZE))
    cache_dir = tmp_path / "cache"
    first = list(make_loader(dataset, batch_size=3, cache_dir=cache_dir))[0]
    assert len(list(cache_dir.rglob("*.safetensors"))) == 3

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds the clip")

    monkeypatch.setattr(loader_module, "decode_clip", no_decoding)
    again = list(make_loader(dataset, batch_size=3, cache_dir=cache_dir))[0]
    assert torch.equal(first["frames"], again["frames"]) and first["timestamps"] == again["timestamps"]
    # other sampling settings are a different entry, never a stale hit
    other = VideoClips(records, VideoTransform(frames=3, image_size=SIZE))
    with pytest.raises(AssertionError, match="decoded although"):
        list(make_loader(other, batch_size=3, cache_dir=cache_dir))
    squashed = VideoClips(records, VideoTransform(frames=5, image_size=SIZE, resize="squash"))
    with pytest.raises(AssertionError, match="decoded although"):
        list(make_loader(squashed, batch_size=3, cache_dir=cache_dir))


def test_squash_keeps_the_whole_frame_and_crop_its_centre():
    """A 320x240 clip: squashed, the model's square holds the full width; cropped, only the
    central 240x240, so the two squares differ; a mode of neither name is refused."""
    path = DATA / "videos" / "video9770.mp4"
    crop = decode_clip(path, num_frames=1, image_size=SIZE).frames[0].astype(int)
    squash = decode_clip(path, num_frames=1, image_size=SIZE, resize="squash").frames[0].astype(int)
    assert crop.shape == squash.shape == (SIZE, SIZE, 3)
    assert np.abs(crop - squash).mean() > 5
    with pytest.raises(EercfError, match="resize must be one of crop, squash, got 'stretch'"):
        decode_clip(path, num_frames=1, image_size=SIZE, resize="stretch")
    with pytest.raises(EercfError, match="resize must be one of"):
        VideoTransform(frames=2, image_size=SIZE, resize="stretch")
    restored = VideoTransform.from_config({"eercf": {"max_frames": 2}, "vision": {"image_size": SIZE},
                                           "preprocess": VideoTransform(2, SIZE, resize="squash")
                                           .preprocess_config()})
    assert restored.resize == "squash"
    assert VideoTransform.from_config({"eercf": {"max_frames": 2},
                                       "vision": {"image_size": SIZE}}).resize == "crop"


def test_damaged_cache_entry_is_a_miss(tmp_path):
    cache = FrameCache(tmp_path)
    path = DATA / "videos" / "video9770.mp4"
    key = cache.key(path, num_frames=2, image_size=SIZE)
    clip = decode_clip(path, num_frames=2, image_size=SIZE)
    cache.put(key, clip)
    stored = cache.get(key)
    assert np.array_equal(stored.frames, clip.frames) and stored.duration == clip.duration
    next(tmp_path.rglob("*.safetensors")).write_bytes(b"garbage")
    assert cache.get(key) is None


def test_epoch_sampler_orders_and_resumes():
    sampler = EpochSampler(10, seed=3)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(10)) and list(sampler) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch1) == list(range(10)) and epoch1 != epoch0
    state = sampler.state_dict(consumed=4)  # a run stopped after 4 items of epoch 1
    resumed = EpochSampler(10, seed=0)
    resumed.load_state_dict(state)
    assert list(resumed) == epoch1[4:] and len(resumed) == 6
    with pytest.raises(EercfError, match="sampler state is for 10 items"):
        EpochSampler(11).load_state_dict(state)


def test_epoch_sampler_shares_among_processes():
    shares = [list(EpochSampler(11, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(s) == 3 for s in shares)
    flat = [i for s in shares for i in s]
    assert len(set(flat)) == 9 and set(flat) <= set(range(11))


def test_shuffled_loader_follows_its_sampler():
    dataset = CaptionPairs(real_records(), VideoTransform(frames=2, image_size=SIZE))
    loader = make_loader(dataset, batch_size=4, shuffle=True, seed=5)
    assert isinstance(loader.sampler, EpochSampler)
    captions = [c for b in loader for c in b["caption"]]
    expected = [dataset.records[dataset.pairs[i][0]].captions[dataset.pairs[i][1]]
                for i in loader.sampler.order()]
    assert captions == expected
    with pytest.raises(EercfError, match="batch_size"):
        make_loader(dataset, batch_size=0)
