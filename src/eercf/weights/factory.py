"""One factory for models: :func:`load_model` resolves anything a user may name (a checkpoint
folder or file in any supported format, a training run folder, a model name meaning its
pretrained weights) and builds the model; :func:`save_model` writes our folder format.

A name never silently means random weights: it means what ``eercf download NAME`` stored, or
one clear error saying how to get it. Random initialisation takes ``pretrained=False``."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from ..errors import EercfError
from ..model.config import get_model_config, list_models
from .formats import (CHECKPOINT_FILES, CONFIG, EERCF_ONLY, TOKENIZER, WEIGHTS, Checkpoint,
                      _check_fit, _infer_config, read_checkpoint)
from .names import has_release

if TYPE_CHECKING:
    import torch

    from ..model import EERCF
    from ..model.tokenizer import CLIPTokenizer

BPE_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
RUN_BEST, RUN_CHECKPOINTS = "best", "checkpoints"


def load_model(path_or_name: str | Path, device: str | torch.device | None = None,
               tokenizer: str | Path | CLIPTokenizer | None = None, *,
               pretrained: bool = True) -> EERCF:
    """An :class:`~eercf.model.EERCF` from our folder, a training run folder (its ``best/``,
    else its last epoch), an OpenAI ``.pt``, a Hugging Face CLIP folder, the authors'
    ``pytorch_model.bin``, or a model name (``ViT-B-32``, ``hf:owner/repo``: the weights
    ``eercf download`` stored). ``pretrained=False`` with an architecture name (``tiny``) gives
    random weights.

    ``tokenizer`` is a ``tokenizer.json`` or ``bpe_simple_vocab_16e6.txt.gz``; by default the
    one in the checkpoint folder, else one beside the file, else OpenAI's (shipped with the
    package) when the vocabulary is CLIP's. With none, the model loads and fails only when
    asked to tokenise."""
    model, _ = _load(resolve(path_or_name, pretrained=pretrained), tokenizer)
    return model.to(device) if device is not None else model


def resolve(path_or_name: str | Path, *, pretrained: bool = True) -> Path | str:
    """What ``path_or_name`` means: a checkpoint path (a run folder resolved to its checkpoint,
    a name to its downloaded folder), or with ``pretrained=False`` an architecture name."""
    path = Path(path_or_name)
    if path.exists():
        return run_checkpoint(path)
    name = str(path_or_name)
    if not pretrained:
        if name not in list_models():
            raise EercfError(f"{name}: not an architecture name ({', '.join(list_models())})")
        return name
    stored = paths.pretrained_dir(name)
    if (stored / CONFIG).is_file():
        return stored
    if has_release(name):
        raise EercfError(f"model {name!r}: its pretrained weights are not on this machine; run "
                         f"`eercf download {name}` once (they go to {stored})")
    if name in list_models():
        raise EercfError(f"model {name!r} is an architecture with no released weights: train it "
                         f"(`eercf train --model {name}`) and use the run folder, or ask for "
                         "random weights explicitly (load_model(name, pretrained=False))")
    if os.sep in name or name.startswith("."):
        raise EercfError(f"{name}: no such checkpoint file or folder")
    raise EercfError(f"{name}: no such checkpoint file or folder, and not a model name "
                     f"({', '.join(list_models())}, or hf:owner/repo)")


def run_checkpoint(path: Path) -> Path:
    """A training run folder means its ``best/`` checkpoint, else its last
    ``checkpoints/epoch-N/``; anything else is a checkpoint itself."""
    if path.is_dir() and (path / RUN_BEST / CONFIG).is_file():
        return path / RUN_BEST
    if path.is_dir() and (path / RUN_CHECKPOINTS).is_dir() and not (path / WEIGHTS).exists():
        epochs = [p for p in (path / RUN_CHECKPOINTS).iterdir()
                  if p.is_dir() and re.fullmatch(r"epoch-\d+", p.name)]
        if not epochs:
            raise EercfError(f"training run {path} has no best/ and no checkpoints/epoch-N/ yet")
        return max(epochs, key=lambda p: int(p.name.split("-")[1]))
    return path


def save_model(model: EERCF, folder: str | Path) -> Path:
    """Write ``model`` as our checkpoint folder, atomically: the files go to a temporary
    folder beside ``folder`` which is then renamed, so a crash never leaves half a checkpoint.
    An existing checkpoint folder is replaced; a folder holding anything else is refused."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EercfError(f"{folder}: exists and is not a folder")
    if folder.is_dir():
        others = sorted(set(os.listdir(folder)) - set(CHECKPOINT_FILES))
        if others:
            raise EercfError(f"{folder}: holds files other than a checkpoint ({', '.join(others[:3])}); "
                             "save into a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(folder, "tmp")
    os.mkdir(staging)  # not mkdtemp: the checkpoint gets the umask's permissions, not 0700
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        (staging / CONFIG).write_text(json.dumps(model.config, indent=2) + "\n")
        save_file(state, str(staging / WEIGHTS), metadata={"format": "eercf"})
        # safetensors writes 0600; give the weights the same permissions as config.json
        os.chmod(staging / WEIGHTS, (staging / CONFIG).stat().st_mode & 0o777)
        if model.tokenizer is not None:
            model.tokenizer.save(staging / TOKENIZER)
        if folder.exists():
            retired = _sibling(folder, "old")
            os.replace(folder, retired)
            os.replace(staging, folder)
            shutil.rmtree(retired)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _sibling(folder: Path, kind: str) -> Path:
    """A hidden, unique name beside ``folder`` (same file system, so renames are atomic)."""
    return folder.parent / f".{folder.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def convert(source: str | Path, destination: str | Path,
            tokenizer: str | Path | CLIPTokenizer | None = None, *,
            progress: bool = False) -> dict[str, Any]:
    """Read any supported checkpoint and write it as our folder; returns a summary
    (``format`` is the source's: eercf, openai, huggingface or authors)."""
    from tqdm import tqdm

    with tqdm(total=2, desc=f"convert {Path(source).name}", disable=not progress, leave=False) as bar:
        model, ckpt = _load(run_checkpoint(Path(source)) if Path(source).exists() else source,
                            tokenizer)
        bar.update()
        save_model(model, destination)
        bar.update()
    return {"source": str(source), "format": ckpt.format, "destination": str(destination),
            "model": model.config["name"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": model.tokenizer is not None}


def _load(source: Path | str, tokenizer: Any) -> tuple[EERCF, Checkpoint]:
    """Build the model of a resolved ``source``: a checkpoint path, or an architecture name
    (random weights)."""
    import torch

    from ..model import EERCF

    if isinstance(source, Path) or Path(source).exists():
        ckpt = read_checkpoint(source)
    else:
        ckpt = Checkpoint({}, get_model_config(str(source)), "random", None)
    where = ckpt.source or source
    config = ckpt.config or _infer_config(ckpt.state, ckpt.heads, where)
    config["eercf"].pop("loss", None)  # checkpoints before loss weights became a training setting
    plain_clip = not any(k.startswith(EERCF_ONLY) for k in ckpt.state)
    # every weight of a full EERCF checkpoint is about to be replaced: build the model on the
    # meta device (no random initialisation, ~2 s for ViT-B/32) and take the loaded tensors
    full = ckpt.format != "random" and not plain_clip
    try:
        with torch.device("meta") if full else contextlib.nullcontext():
            model = EERCF(config)
    except EercfError as err:
        raise EercfError(f"{where}: unsupported architecture: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise EercfError(f"{where}: incomplete or malformed model config ({type(err).__name__}: {err})") from None
    if ckpt.format != "random":
        _check_fit(model, ckpt.state, plain_clip, where)
        if full:
            own = model.state_dict()
            model.load_state_dict({k: v.to(own[k].dtype) for k, v in ckpt.state.items()},
                                  assign=True)
        else:
            model.load_state_dict(ckpt.state, strict=False)
            model.init_temporal_from_text()
    model.tokenizer = _resolve_tokenizer(tokenizer, ckpt, model)
    return model.eval(), ckpt


def _resolve_tokenizer(tokenizer: Any, ckpt: Checkpoint, model: EERCF) -> CLIPTokenizer | None:
    """The argument, else one in/beside the checkpoint, else OpenAI's shipped BPE for a model
    with CLIP's vocabulary. A tokenizer the user or the checkpoint names must fit."""
    from ..model.tokenizer import OPENAI_VOCAB_SIZE, CLIPTokenizer

    vocab = model.config["text"]["vocab_size"]
    if isinstance(tokenizer, CLIPTokenizer):
        found, path = tokenizer, "the given tokenizer"
    elif tokenizer is not None:
        found, path = CLIPTokenizer.from_file(tokenizer), tokenizer
    else:
        folder = ckpt.source.parent if ckpt.source is not None else None
        path = next((p for p in (folder / TOKENIZER, folder / BPE_VOCAB) if p.is_file()), None) \
            if folder is not None else None
        if path is None:
            return CLIPTokenizer.openai() if vocab == OPENAI_VOCAB_SIZE else None
        found = CLIPTokenizer.from_file(path)
    if found.vocab_size > vocab:
        raise EercfError(f"{path}: the tokenizer has {found.vocab_size} ids but the model's "
                         f"vocabulary has {vocab}")
    return found
