"""The tokeniser must give exactly the ids of OpenAI's reference ``simple_tokenizer``. The
reference below is a slow, loop-by-loop re-implementation of that algorithm from its
description: byte -> unicode map, BPE by lowest merge rank, ``</w>`` on the last symbol."""
from __future__ import annotations

import csv
import gzip
import html
import re
from importlib import resources
from pathlib import Path

import ftfy
import pytest
import regex
import torch
from tokenizers import Tokenizer, models

from conftest import SHARED_DATA
from eercf.errors import EercfError
from eercf.model.tokenizer import CLIPTokenizer

BPE_PATH = Path(str(resources.files("eercf.model") / "bpe_simple_vocab_16e6.txt.gz"))  # shipped
CAPTIONS_CSV = SHARED_DATA / "msrvtt_sample" / "MSRVTT_JSFUSION_test.csv"

MESSY = [
    "Tom &amp;amp; Jerry &lt;3 &quot;cartoons&quot; &#39;quoted&#39;",
    "caf\u00c3\u00a9 cr\u00c3\u00a8me br\u00c3\u00bbl\u00c3\u00a9e",  # mojibake of café crème brûlée
    "a dog \U0001f436 runs \U0001f3c3\u200d\u2642\ufe0f fast \u2764\ufe0f\U0001f44d\U0001f3fd",
    "\u4e00\u4e2a\u4eba\u5728\u8dd1\u6b65 \u3068\u3046\u304d\u3087\u3046 \ud55c\uad6d\uc5b4 \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "  lots\t\tof   white\n\n space \r\n and\u00a0nbsp\u2003em  ",
    "numbers 12345 3.14159 1,000,000 2nd 10x 007",
    "it's isn't we're they've I'm we'll he'd O'Neil rock'n'roll ''s 'S",
    "wow!!! ... ?!?! --- (((nested))) [x] {y} <z> @#$%^&*_+=~`|\\/",
    "A MAN Is Playing GUITAR On STAGE",
    "special <|endoftext|> in text, and !<|startoftext|> after punctuation",
    "na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m stra\u00dfe \u0130stanbul \u212a\u00e9lvin \u017fs '\u017f",
    "",
    "   ",
    "a " * 100 + "very long caption that goes well past the word limit " * 5,
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    "tab\tseparated\tvalues\u2028line\u2029para\x0bvt\x0cff",
    "\U0001d573\U0001d586\U0001d588 math letters \u2160\u2161\u2162 roman \u00bd \u00b2 superscripts",
]


def _bytes_to_unicode() -> dict[int, str]:
    """Printable bytes map to themselves, the rest to 256, 257, ...; printable ones first."""
    keep = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    table = {b: chr(b) for b in keep}
    rest = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(rest)})
    return table


class ReferenceTokenizer:
    """OpenAI's algorithm, written for clarity, not speed."""

    def __init__(self, bpe_path: Path):
        lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
        self.byte_encoder = _bytes_to_unicode()
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.pattern = regex.compile(
            r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE)

    def bpe(self, token: str) -> list[str]:
        if token in ("<|startoftext|>", "<|endoftext|>"):
            return [token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text: str) -> list[int]:
        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        text = re.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for token in self.pattern.findall(text):
            chars = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(chars))
        return ids

    def tokenize(self, texts: list[str], max_words: int) -> torch.Tensor:
        out = torch.zeros(len(texts), max_words, dtype=torch.long)
        for row, text in enumerate(texts):
            seq = [49406] + self.encode(text)[: max_words - 2] + [49407]
            out[row, : len(seq)] = torch.tensor(seq)
        return out


@pytest.fixture(scope="module")
def reference() -> ReferenceTokenizer:
    return ReferenceTokenizer(BPE_PATH)


@pytest.fixture(scope="module")
def openai_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_bpe_vocab(BPE_PATH)


def _captions() -> list[str]:
    with open(CAPTIONS_CSV, newline="", encoding="utf-8") as f:
        return [row["sentence"] for row in csv.DictReader(f)]


@pytest.mark.needs_shared
def test_shipped_vocabulary_is_openais():
    """The package's BPE file is OpenAI's, byte for byte (the copy in ../shared came from
    OpenAI's repository), so a clone alone tokenises as CLIP does."""
    assert BPE_PATH.read_bytes() == (SHARED_DATA / "clip" / "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    assert CLIPTokenizer.openai().vocab_size == 49408


def test_special_ids_and_size(openai_tokenizer):
    assert (openai_tokenizer.sot_id, openai_tokenizer.eot_id, openai_tokenizer.vocab_size) == (49406, 49407, 49408)


@pytest.mark.needs_shared
def test_msrvtt_captions_match_reference(openai_tokenizer, reference):
    captions = _captions()
    assert len(captions) == 1000
    for max_words in (32, 77):
        assert torch.equal(openai_tokenizer.encode(captions, max_words), reference.tokenize(captions, max_words))


@pytest.mark.parametrize("max_words", [2, 5, 32, 77])
def test_messy_text_matches_reference(openai_tokenizer, reference, max_words):
    got = openai_tokenizer.encode(MESSY, max_words)
    want = reference.tokenize(MESSY, max_words)
    for text, g, w in zip(MESSY, got, want):
        assert torch.equal(g, w), text


def test_untruncated_bpe_matches_reference(openai_tokenizer, reference):
    assert openai_tokenizer.bpe_ids(MESSY) == [reference.encode(t) for t in MESSY]


def test_layout_sot_eot_padding(openai_tokenizer):
    ids = openai_tokenizer.encode(["a little girl does gymnastics", "", "word " * 50], 8)
    assert ids.dtype == torch.long and ids.shape == (3, 8)
    assert ids[0, 0] == 49406 and ids[0].argmax() == 6 and ids[0, 7] == 0
    assert ids[1].tolist() == [49406, 49407, 0, 0, 0, 0, 0, 0]
    assert ids[2, -1] == 49407 and (ids[2] != 0).all()


def test_save_and_from_file_round_trip(openai_tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    openai_tokenizer.save(path)
    again = CLIPTokenizer.from_file(path)
    assert torch.equal(again.encode(MESSY, 32), openai_tokenizer.encode(MESSY, 32))
    assert CLIPTokenizer.from_file(BPE_PATH).vocab_size == 49408


def test_huggingface_style_file(openai_tokenizer, tmp_path, reference):
    """A Hugging Face CLIP tokenizer.json: merges as "a b" strings, its own normaliser and
    post-processor; ids must still be OpenAI's."""
    import json

    spec = json.loads(openai_tokenizer.to_str())
    spec["model"]["merges"] = [" ".join(m) for m in spec["model"]["merges"]]
    spec["model"].update(unk_token="<|endoftext|>", dropout=0.5, ignore_merges=True)
    spec["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
        {"type": "Lowercase"}]}
    path = tmp_path / "hf.json"
    path.write_text(json.dumps(spec))
    hf = CLIPTokenizer.from_file(path)
    assert torch.equal(hf.encode(MESSY, 77), reference.tokenize(MESSY, 77))


@pytest.mark.needs_shared
def test_trained_tokenizer():
    captions = _captions()
    tok = CLIPTokenizer.train(captions, vocab_size=1024)
    assert tok.vocab_size <= 1024
    assert (tok.sot_id, tok.eot_id) == (tok.vocab_size - 2, tok.vocab_size - 1)
    ids = tok.encode(captions[:50] + MESSY, 32)
    eot_position = (ids == tok.eot_id).int().argmax(dim=1)
    assert (ids.argmax(dim=1) == eot_position).all()  # EOT is the arg-max id
    assert ids.max() < tok.vocab_size
    # a trained BPE compresses its own captions better than raw bytes
    assert sum(len(x) for x in tok.bpe_ids(captions)) < 0.5 * sum(len(c.encode()) for c in captions)


def test_bad_inputs(tmp_path, openai_tokenizer):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EercfError, match="bad.json"):
        CLIPTokenizer.from_file(bad)
    wordpiece = tmp_path / "wordpiece.json"
    Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(str(wordpiece))
    with pytest.raises(EercfError, match="not a CLIP tokenizer"):
        CLIPTokenizer.from_file(wordpiece)
    garbage = tmp_path / "merges.txt.gz"
    garbage.write_bytes(b"not gzip")
    with pytest.raises(EercfError, match="merges.txt.gz"):
        CLIPTokenizer.from_bpe_vocab(garbage)
    with pytest.raises(EercfError, match="max_words"):
        openai_tokenizer.encode(["x"], 1)
    with pytest.raises(EercfError, match="list of texts"):
        openai_tokenizer.encode("a string", 8)
    with pytest.raises(EercfError, match="too small"):
        CLIPTokenizer.train(["a b"], vocab_size=100)
