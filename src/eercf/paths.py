"""One cache root for everything eercf keeps between runs: ``$EERCF_HOME``, else
``$XDG_CACHE_HOME/eercf``, else ``~/.cache/eercf``. Under it: ``models/NAME/`` (pretrained
weights as our checkpoint folder, written by ``eercf download``), ``downloads/`` (files as
published), ``frames/`` (decoded frames shared by training and evaluation) and
``tokenizer.json`` (the last downloaded CLIP tokenizer)."""
from __future__ import annotations

import os
import re
from pathlib import Path

HOME_ENV = "EERCF_HOME"


def home() -> Path:
    """The cache root (see the module docstring)."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eercf"


def slug(name: str) -> str:
    """A model name as one folder name (``hf:openai/clip-vit-base-patch32`` -> ``hf--openai--...``)."""
    return re.sub(r"[^\w.-]+", "--", name)


def pretrained_dir(name: str) -> Path:
    """Where ``eercf download NAME`` puts the converted checkpoint that the name then means."""
    return home() / "models" / slug(name)


def downloads_dir(name: str) -> Path:
    """Where the files of ``name`` land as published (resumable ``.part`` files included)."""
    return home() / "downloads" / slug(name)


def frames_dir() -> Path:
    """The decoded-frame cache shared by ``eercf train`` and ``eercf eval``."""
    return home() / "frames"
