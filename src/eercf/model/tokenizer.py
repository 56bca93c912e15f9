"""CLIP's byte-level BPE tokeniser on the ``tokenizers`` library, giving exactly the ids of
OpenAI's reference ``simple_tokenizer``: same text cleaning (ftfy, HTML unescape twice,
whitespace collapse, lower case), same pre-tokenising regex, same vocabulary order.
OpenAI's merges file ships with the package (MIT), so any model with CLIP's 49,408-id
vocabulary tokenises without a download (``CLIPTokenizer.openai()``)."""
from __future__ import annotations

import gzip
import html
import json
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import ftfy
import regex
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from ..errors import EercfError

if TYPE_CHECKING:
    import torch

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
END_OF_WORD = "</w>"
# OpenAI's pre-tokeniser. The special tokens come first so that they match where (and only
# where) OpenAI's regex matches them, e.g. not after a run of punctuation such as "!<|".
PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"
           r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
_WORDS = regex.compile(PATTERN, regex.IGNORECASE)
# OpenAI's file holds more merges than CLIP uses: the vocabulary is 49408 = 512 + merges + 2.
OPENAI_MERGES = 49152 - 256 - 2
OPENAI_VOCAB_SIZE = 512 + OPENAI_MERGES + 2
BPE_VOCAB = "bpe_simple_vocab_16e6.txt.gz"


def clean(text: str) -> str:
    """OpenAI's ``basic_clean`` + ``whitespace_clean`` + lower case, in their order."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's map from bytes to printable characters; its order fixes the first 256 ids."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def _clip_tokenizer(tok: Tokenizer) -> Tokenizer:
    """Put a BPE model in CLIP's pipeline. Cleaning is done in Python (ftfy has no Rust twin),
    so the pipeline has no normaliser; the saved file still pre-tokenises like CLIP. Whatever
    a loaded file said about normalising, padding or truncating is dropped."""
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("(?i)" + PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None
    tok.no_padding()
    tok.no_truncation()
    tok.add_special_tokens([SOT, EOT])
    return tok


def _from_merges(merges: Sequence[tuple[str, str]]) -> Tokenizer:
    """Build the vocabulary as OpenAI does: bytes, bytes + ``</w>``, one token per merge,
    then SOT and EOT (the two highest ids, so the EOT position is the arg-max id)."""
    alphabet = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in alphabet + [c + END_OF_WORD for c in alphabet]:
        vocab[token] = len(vocab)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for token in (SOT, EOT):
        vocab[token] = len(vocab)
    bpe = models.BPE(vocab=vocab, merges=list(merges), end_of_word_suffix=END_OF_WORD,
                     continuing_subword_prefix="", fuse_unk=False)
    return _clip_tokenizer(Tokenizer(bpe))


class CLIPTokenizer:
    """CLIP BPE ids ``[SOT] + bpe(text)[: max_words - 2] + [EOT]``, zero padded."""

    def __init__(self, tokenizer: Tokenizer, source: str = "tokenizer"):
        sot, eot = tokenizer.token_to_id(SOT), tokenizer.token_to_id(EOT)
        if sot is None or eot is None:
            raise EercfError(f"{source}: not a CLIP tokenizer (no {SOT} / {EOT} tokens)")
        self._tok = tokenizer
        self.sot_id, self.eot_id = sot, eot

    @classmethod
    def from_bpe_vocab(cls, path: str | Path) -> CLIPTokenizer:
        """From OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (merges, one per line)."""
        path = Path(path)
        try:
            lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise EercfError(f"{path}: cannot read the BPE merges file ({err})") from None
        merges = [tuple(line.split()) for line in lines[1:OPENAI_MERGES + 1]]
        if len(merges) != OPENAI_MERGES or any(len(m) != 2 for m in merges):
            raise EercfError(f"{path}: not a CLIP BPE merges file "
                             f"(expected {OPENAI_MERGES} lines of two symbols after the header)")
        return cls(_from_merges(merges), str(path))

    @classmethod
    def openai(cls) -> CLIPTokenizer:
        """OpenAI CLIP's tokenizer, from the merges file shipped in the package."""
        return _openai()

    @classmethod
    def from_file(cls, path: str | Path) -> CLIPTokenizer:
        """From a ``tokenizer.json`` (ours, or a Hugging Face CLIP one), or a ``.txt.gz``
        merges file. The pipeline is reset to CLIP's whatever the file says, so ids match."""
        path = Path(path)
        if path.name.endswith(".gz"):
            return cls.from_bpe_vocab(path)
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust reader raises plain Exceptions
            raise EercfError(f"{path}: not a readable tokenizer.json ({err})") from None
        model = tok.model
        if not isinstance(model, models.BPE) or model.end_of_word_suffix != END_OF_WORD:
            raise EercfError(f"{path}: not a CLIP tokenizer (needs a BPE model with "
                             f"end_of_word_suffix {END_OF_WORD!r})")
        model.dropout, model.ignore_merges = None, False  # CLIP's BPE is deterministic, merges only
        return cls(_clip_tokenizer(tok), str(path))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> CLIPTokenizer:
        """A small CLIP-style BPE learnt from ``texts`` (e.g. a model's own captions), with
        the same cleaning, pre-tokenising and vocabulary layout as OpenAI's."""
        merges_wanted = vocab_size - 512 - 2
        if merges_wanted < 0:
            raise EercfError(f"vocab_size {vocab_size} is too small: a CLIP BPE needs at least "
                             "514 ids (512 byte symbols, SOT and EOT)")
        learner = _clip_tokenizer(Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD,
                                                       continuing_subword_prefix="")))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 2, show_progress=False, special_tokens=[],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix=END_OF_WORD,
            continuing_subword_prefix="")
        learner.train_from_iterator((clean(t) for t in texts), trainer)
        learnt = json.loads(learner.to_str())["model"]["merges"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learnt]
        return cls(_from_merges(merges[:merges_wanted]), "trained tokenizer")

    def save(self, path: str | Path) -> None:
        """Write a ``tokenizer.json`` that ``from_file`` (and Hugging Face) can read."""
        self._tok.save(str(path))

    def to_str(self) -> str:
        """The ``tokenizer.json`` content (used to write it atomically with a checkpoint)."""
        return self._tok.to_str()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def bpe_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """BPE ids of each text, without SOT/EOT and untruncated."""
        words = [_WORDS.findall(clean(t)) for t in texts]
        encodings = self._tok.encode_batch(words, is_pretokenized=True, add_special_tokens=False)
        return [e.ids for e in encodings]

    def encode(self, texts: Sequence[str], max_words: int) -> torch.Tensor:
        """LongTensor ``[T, max_words]``: ``[SOT] + bpe[: max_words - 2] + [EOT]``, 0 padded."""
        import torch

        if isinstance(texts, str):
            raise EercfError("tokenize takes a list of texts, not a single string")
        if max_words < 2:
            raise EercfError(f"max_words must be at least 2 (SOT and EOT), got {max_words}")
        out = torch.zeros(len(texts), max_words, dtype=torch.long)
        for row, ids in enumerate(self.bpe_ids(texts)):
            seq = [self.sot_id, *ids[: max_words - 2], self.eot_id]
            out[row, : len(seq)] = torch.tensor(seq)
        return out


@lru_cache(maxsize=1)
def _openai() -> CLIPTokenizer:  # immutable once built: one per process
    return CLIPTokenizer.from_bpe_vocab(Path(str(resources.files("eercf.model") / BPE_VOCAB)))
