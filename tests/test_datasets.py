"""Benchmark readers (eercf.data.datasets): the real MSR-VTT split files, and small layouts of
every other benchmark written here, with bad rows that must be reported and skipped."""
from __future__ import annotations

import csv
import json
import pickle
import warnings
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from eercf.data.datasets import DatasetWarning, VideoRecord, load_dataset
from eercf.errors import EercfError

DATA = SHARED_DATA / "msrvtt_sample"
pytestmark = pytest.mark.needs_shared
CLIPS = [DATA / "videos" / "video9770.mp4", DATA / "videos" / "video9771.mp4"]
FOLDER = DATA / "frames" / "video7020"


def link(target: Path, at: Path) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target, target_is_directory=target.is_dir())
    return at


def by_id(records: list[VideoRecord]) -> dict[str, VideoRecord]:
    return {r.video_id: r for r in records}


# ----------------------------------------------------------------------------- MSR-VTT

def test_msrvtt_1k_a_test_split_on_the_real_files():
    with pytest.warns(DatasetWarning, match=r"skipped 994 msrvtt test videos with no video file"):
        records = load_dataset("msrvtt", DATA, "test")
    found = by_id(records)
    assert set(found) == {"video9770", "video9771", "video7020", "video7021", "video7024",
                          "video7025"}
    assert found["video9771"].captions == ["a little girl does gymnastics"]
    assert found["video9770"].path == CLIPS[0] and found["video7020"].path == FOLDER
    assert all(r.split == "test" and r.span is None for r in records)


def test_msrvtt_train_takes_every_caption_of_the_9k_videos(tmp_path):
    link(DATA / "MSRVTT_train.9k.csv", tmp_path / "MSRVTT_train.9k.csv")
    link(CLIPS[0], tmp_path / "videos" / "all" / "video0.mp4")
    link(CLIPS[1], tmp_path / "videos" / "all" / "video1.mp4")
    link(FOLDER, tmp_path / "frames" / "video2")
    sentences = [{"video_id": "video0", "caption": "a man talks", "sen_id": 0},
                 {"video_id": "video0", "caption": "someone is speaking", "sen_id": 1},
                 {"video_id": "video1", "caption": "a girl jumps", "sen_id": 2},
                 {"video_id": "video2", "caption": "a cake is decorated", "sen_id": 3},
                 {"video_id": "video2", "sen_id": 4},  # no caption: reported
                 {"video_id": "video3", "caption": "no file for this one", "sen_id": 5},
                 {"video_id": "video9770", "caption": "a 1k-A test video", "sen_id": 6}]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = load_dataset("msrvtt", tmp_path, "train")
    messages = [str(w.message) for w in caught]
    assert any("skipped 1 sentences: sentence 4: missing caption" in m for m in messages)
    assert any("skipped 8996 video ids with no caption" in m for m in messages)
    assert any("skipped 1 msrvtt train videos with no video file" in m and "video3" in m
               for m in messages)
    found = by_id(records)
    assert set(found) == {"video0", "video1", "video2"}  # video9770 is a 1k-A test video
    assert found["video0"].captions == ["a man talks", "someone is speaking"]
    assert found["video2"].path.name == "video2" and found["video2"].split == "train"


def test_msrvtt_7k_split_and_bad_test_rows(tmp_path):
    link(CLIPS[0], tmp_path / "videos" / "all" / "video5.mp4")
    (tmp_path / "MSRVTT_train.7k.csv").write_text("video_id\nvideo5\n")
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(
        {"sentences": [{"video_id": "video5", "caption": "a clip", "sen_id": 0}]}))
    assert [r.video_id for r in load_dataset("msrvtt", tmp_path, "train", train_csv="7k")] == ["video5"]
    with open(tmp_path / "MSRVTT_JSFUSION_test.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        writer.writerow(["ret0", "msr5", "video5", "a clip of something"])
        writer.writerow(["ret1", "msr6", "video6", ""])
        writer.writerow(["ret2", "msr7", "", "no video id"])
    with pytest.warns(DatasetWarning, match=r"skipped 2 rows: line 3: missing sentence; "
                                            r"line 4: missing video_id"):
        records = load_dataset("msrvtt", tmp_path, "test")
    assert [(r.video_id, r.captions) for r in records] == [("video5", ["a clip of something"])]


def test_missing_annotation_file_is_named(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(EercfError, match=r"MSRVTT_JSFUSION_test\.csv: annotation file not found"):
        load_dataset("msrvtt", tmp_path, "test")
    with pytest.raises(EercfError, match=r"MSRVTT_train\.9k\.csv: annotation file not found"):
        load_dataset("msrvtt", tmp_path, "train")


def test_bad_names_and_places(tmp_path):
    with pytest.raises(EercfError, match="unknown dataset 'kinetics'"):
        load_dataset("kinetics", tmp_path)
    with pytest.raises(EercfError, match="unknown split 'dev'"):
        load_dataset("msrvtt", DATA, "dev")
    with pytest.raises(EercfError, match="no video folder found"):
        load_dataset("msrvtt", tmp_path, "test")
    with pytest.raises(EercfError, match="unknown option"):
        load_dataset("msrvtt", DATA, "test", frames_per_second=3)


# ----------------------------------------------------------------------------- other benchmarks

def test_msvd(tmp_path):
    link(CLIPS[0], tmp_path / "YouTubeClips" / "abc_1_5.avi")
    (tmp_path / "test_list.txt").write_text("abc_1_5\nzzz_2_4\n")
    captions = {"abc_1_5": [["a", "man", "talks"], ["someone", "speaks"]], "zzz_2_4": []}
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    with pytest.warns(DatasetWarning, match=r"msvd test video ids with no caption: zzz_2_4"):
        records = load_dataset("msvd", tmp_path, "test")
    assert records[0].captions == ["a man talks", "someone speaks"]
    assert records[0].path.name == "abc_1_5.avi"


def test_msvd_refuses_a_pickle_that_runs_code(tmp_path):
    import os

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "YouTubeClips").mkdir()
    (tmp_path / "test_list.txt").write_text("abc\n")
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"abc": Exploit()}))
    with pytest.raises(EercfError, match=r"raw-captions\.pkl: not a caption pickle"):
        load_dataset("msvd", tmp_path, "test")


def test_didemo_paragraphs_and_spans(tmp_path):
    link(CLIPS[0], tmp_path / "videos" / "1234@N00_5678.mov.mp4")
    (tmp_path / "test_list.txt").write_text("1234@N00_5678.mov\n")
    items = [{"video": "1234@N00_5678.mov", "description": "a dog runs", "times": [[0, 1]]},
             {"video": "1234@N00_5678.mov", "description": "the dog stops", "times": [[2, 2]]},
             {"video": "1234@N00_5678.mov", "times": [[3, 3]]},
             {"video": "other.mov", "description": "not in this split", "times": [[0, 0]]}]
    (tmp_path / "test_data.json").write_text(json.dumps(items))
    with pytest.warns(DatasetWarning, match=r"skipped 2 annotations: item 2: missing description"):
        records = load_dataset("didemo", tmp_path, "test")
    assert records[0].captions == ["a dog runs the dog stops"]
    assert records[0].span == (0.0, 30.0)
    with pytest.warns(DatasetWarning):
        sentences = load_dataset("didemo", tmp_path, "test", paragraph=False)
    assert sentences[0].captions == ["a dog runs", "the dog stops"]


def test_activitynet_val_1_is_the_test_split(tmp_path):
    link(CLIPS[1], tmp_path / "videos" / "QOlSCBRmfWY.mp4")  # file named without "v_"
    (tmp_path / "val_ids.json").write_text(json.dumps(["v_QOlSCBRmfWY", "v_missing"]))
    (tmp_path / "val_1.json").write_text(json.dumps({
        "v_QOlSCBRmfWY": {"duration": 82.7, "timestamps": [[0.8, 19.9], [17.4, 60.8]],
                          "sentences": ["A girl stands on a mat. ", " She flips."]}}))
    with pytest.warns(DatasetWarning, match=r"v_missing: unknown video id"):
        records = load_dataset("activitynet", tmp_path, "test")
    assert records[0].video_id == "v_QOlSCBRmfWY"
    assert records[0].captions == ["A girl stands on a mat. She flips."]


def test_vatex_languages(tmp_path):
    link(CLIPS[0], tmp_path / "videos" / "Ptf_2VRj-V0_000122_000132.mp4")
    (tmp_path / "test_list.txt").write_text("Ptf_2VRj-V0_000122_000132\n")
    (tmp_path / "vatex_data.json").write_text(json.dumps({"Ptf_2VRj-V0_000122_000132": {
        "enCap": ["a man plays drums", "drums are played"], "chCap": ["一个人在打鼓"]}}))
    assert load_dataset("vatex", tmp_path, "test")[0].captions == ["a man plays drums",
                                                                    "drums are played"]
    assert load_dataset("vatex", tmp_path, "test", language="zh")[0].captions == ["一个人在打鼓"]


def test_lsmdc_clips_in_movie_folders(tmp_path):
    clip = "0001_American_Beauty_00.00.51.926-00.00.54.129"
    link(CLIPS[0], tmp_path / "videos" / "0001_American_Beauty" / f"{clip}.avi")
    rows = [f"{clip}\t00.00.51.926\t00.00.54.129\t00.00.51.000\t00.00.55.000\tSOMEONE smiles.",
            "broken row without tabs"]
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(DatasetWarning, match=r"skipped 1 rows: line 2: expected 6 tab-separated"):
        records = load_dataset("lsmdc", tmp_path, "test")
    assert records[0].video_id == clip and records[0].captions == ["SOMEONE smiles."]


def test_generic_csv_and_jsonl(tmp_path):
    link(CLIPS[0], tmp_path / "clips" / "a.mp4")
    link(CLIPS[1], tmp_path / "clips" / "b.mp4")
    with open(tmp_path / "annotations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "caption", "split"])
        writer.writerow(["clips/a.mp4", "a person connects a cable", "test"])
        writer.writerow(["clips/a.mp4", "someone plugs something in", "test"])
        writer.writerow(["clips/b.mp4", "a girl does gymnastics", "train"])
        writer.writerow(["clips/c.mp4", "no such file", "test"])
        writer.writerow(["", "no video", "test"])
    with pytest.warns(DatasetWarning, match=r"skipped 2 rows: line 5: .*c\.mp4 not found; "
                                            r"line 6: missing video"):
        records = load_dataset("generic", tmp_path, "test")
    assert [(r.video_id, r.captions) for r in records] == [
        ("a", ["a person connects a cable", "someone plugs something in"])]
    lines = [{"video": str(CLIPS[1]), "caption": "a girl tumbles", "start": 2, "end": 9.5,
              "video_id": "gym"}, {"caption": "nothing else"}]
    (tmp_path / "more.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.warns(DatasetWarning, match="line 2: missing video"):
        records = load_dataset("generic", tmp_path / "more.jsonl", "train")
    assert records[0].video_id == "gym" and records[0].span == (2.0, 9.5)
    assert records[0].split == "train"  # rows without a split belong to every split
