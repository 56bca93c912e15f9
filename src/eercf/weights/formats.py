"""Checkpoint formats in: our folder (``model.safetensors`` + ``config.json`` +
``tokenizer.json``), OpenAI CLIP ``.pt`` files (TorchScript or state dict), Hugging Face CLIP
folders and the authors' EERCF ``pytorch_model.bin``. Every format is mapped to our parameter
names (OpenAI's CLIP names under ``clip.``), and the architecture is read from the tensor
shapes where the file carries no config, as OpenAI's ``build_model`` does. Building a model
from what is read here is :mod:`eercf.weights.factory`'s job."""
from __future__ import annotations

import json
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EercfError
from ..model.config import get_model_config, list_models

if TYPE_CHECKING:
    import torch

    from ..model import EERCF

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
CHECKPOINT_FILES = (WEIGHTS, CONFIG, TOKENIZER)
# Scalars OpenAI's archives carry beside the weights; the architecture is read from shapes.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# Parameters of the authors' model that the EERCF method does not use (CLIP4Clip's cross
# encoder and LSTM head, and weight matrices of ablations); dropped on import.
AUTHORS_UNUSED = re.compile(r"^(cross|similarity_dense|lstm_visual)\.|_mat_weight\d*$|^word_logit_weight$")
# Where parameters of a plain CLIP leave off: the rest is initialised by the model.
EERCF_ONLY = ("frame_position_embeddings.", "temporal.", "global_weight", "frame_weight")


@dataclass
class Checkpoint:
    """Weights already in our layout, plus what the file says about itself."""

    state: dict[str, torch.Tensor]
    config: dict[str, Any] | None  # None: infer the architecture from the shapes
    format: str                    # eercf, openai, huggingface, authors
    source: Path | None
    heads: dict[str, int] | None = None  # attention heads, where a config names them


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The weights of a checkpoint file or folder, renamed to our layout (not yet in a model)."""
    path = Path(path)
    if not path.exists():
        raise EercfError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path)
    return _from_state(_read_weights(path), path)


def _read_folder(folder: Path) -> Checkpoint:
    config_path = folder / CONFIG
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise EercfError(f"{config_path}: not valid JSON ({err})") from None
        if not isinstance(config, dict):
            raise EercfError(f"{config_path}: not a model config")
        if "eercf" in config:
            weights = folder / WEIGHTS
            if not weights.is_file():
                raise EercfError(f"{folder}: has {CONFIG} but no {WEIGHTS}")
            return Checkpoint(_check_ours(_read_weights(weights), weights), config, "eercf", weights)
        if "vision_config" in config or config.get("model_type") == "clip":
            weights = _first_file(folder, (WEIGHTS, "pytorch_model.bin"))
            return Checkpoint(_huggingface_to_ours(_read_weights(weights), weights), None,
                              "huggingface", weights, _huggingface_heads(config, config_path))
        raise EercfError(f"{config_path}: neither an eercf nor a Hugging Face CLIP config")
    weights = _first_file(folder, (WEIGHTS, "pytorch_model.bin"))
    return _from_state(_read_weights(weights), weights)


def _first_file(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise EercfError(f"{folder}: no weights file ({' or '.join(names)})")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, a TorchScript archive or a ``torch.save`` state dict."""
    import torch

    if path.stat().st_size == 0:
        raise EercfError(f"{path}: file is empty")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        elif _is_torchscript(path):
            with warnings.catch_warnings():  # torch deprecates TorchScript; OpenAI ships it
                warnings.simplefilter("ignore", DeprecationWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except EercfError:
        raise
    except Exception as err:  # each reader has its own error types; all mean "unreadable"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EercfError(f"{path}: not a readable checkpoint (truncated or corrupted?): {reason}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise EercfError(f"{path}: not a checkpoint (expected a dict of named tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold ``code/`` and ``constants.pkl``; ``torch.save`` zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") for n in archive.namelist())


def _from_state(state: dict[str, torch.Tensor], path: Path) -> Checkpoint:
    """Recognise the layout of a bare state dict by its key names."""
    keys = state.keys()
    if "global_weight" in keys or any(k.startswith("temporal.") for k in keys):
        return Checkpoint(_check_ours(state, path), None, "eercf", path)
    if ("global_mat_weight" in keys or any(k.startswith("transformerClip.") for k in keys)
            or "clip.visual.conv1.weight" in keys):
        return Checkpoint(_authors_to_ours(state, path), None, "authors", path)
    if any(k.startswith(("text_model.", "vision_model.")) for k in keys):
        return Checkpoint(_huggingface_to_ours(state, path), None, "huggingface", path)
    if "visual.conv1.weight" in keys:
        state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
        return Checkpoint({f"clip.{k}": v for k, v in state.items()}, None, "openai", path)
    raise EercfError(f"{path}: not a CLIP or EERCF checkpoint (no known parameter names, "
                     f"e.g. {', '.join(list(keys)[:3])})")


def _check_ours(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    if not any(k.startswith("clip.") for k in state):
        raise EercfError(f"{path}: no clip.* parameters, not an eercf checkpoint")
    return state


def _authors_to_ours(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The authors' names (CLIP4Clip's): ``transformerClip`` is our temporal block,
    ``global_mat_weight`` is W_g, ``frame_logit_weight`` is W_f."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^transformerClip\.", "temporal.", key)
        key = {"global_mat_weight": "global_weight", "frame_logit_weight": "frame_weight"}.get(key, key)
        if not (AUTHORS_UNUSED.search(key) or key.removeprefix("clip.") in OPENAI_EXTRA_KEYS):
            out[key] = value
    return out


_HF_RENAMES = [
    (r"^text_model\.embeddings\.token_embedding\.weight$", "token_embedding.weight"),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^text_model\.encoder\.layers\.(\d+)\.", r"transformer.resblocks.\1."),
    (r"^text_model\.final_layer_norm\.", "ln_final."),
    (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
    (r"^vision_model\.embeddings\.patch_embedding\.weight$", "visual.conv1.weight"),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
    (r"^vision_model\.pre_layrnorm\.", "visual.ln_pre."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.", r"visual.transformer.resblocks.\1."),
    (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
    (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
    (r"\.layer_norm1\.", ".ln_1."),
    (r"\.layer_norm2\.", ".ln_2."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."),
    (r"\.mlp\.fc2\.", ".mlp.c_proj."),
]


def _huggingface_to_ours(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """``CLIPModel`` names to OpenAI's: separate q/k/v projections become one ``in_proj``,
    the projections are stored transposed (``nn.Linear`` weights vs OpenAI matrices)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue  # a buffer of arange(), not a parameter
        if key in ("text_projection.weight", "visual_projection.weight"):
            out["text_projection" if key.startswith("text") else "visual.proj"] = value.T.contiguous()
            continue
        if key == "logit_scale":
            out[key] = value
            continue
        for pattern, replacement in _HF_RENAMES:
            key = re.sub(pattern, replacement, key)
        match = re.fullmatch(r"(.+)\.self_attn\.([qkv])_proj\.(weight|bias)", key)
        if match:
            qkv.setdefault(f"{match[1]}.attn.in_proj_{match[3]}", {})[match[2]] = value
        elif key.startswith(("text_model.", "vision_model.")):
            raise EercfError(f"{path}: unknown Hugging Face CLIP parameter {key!r}")
        else:
            out[key] = value
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise EercfError(f"{path}: {key} lacks some of its q/k/v projections")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {f"clip.{k}": v for k, v in out.items()}


def _huggingface_heads(config: dict, path: Path) -> dict[str, int]:
    """Attention heads from a Hugging Face config, where an absent key means the
    ``CLIPTextConfig``/``CLIPVisionConfig`` default (8 and 12 heads). CLIP's QuickGELU is the
    only activation our towers implement, so other activations are refused, not misread."""
    heads = {}
    for tower, section, default_heads in (("text", "text_config", 8), ("vision", "vision_config", 12)):
        sub = config.get(section) or config.get(f"{section}_dict") or {}
        act = sub.get("hidden_act", "quick_gelu")
        if act != "quick_gelu":
            raise EercfError(f"{path}: {section}.hidden_act is {act!r}; only CLIP's quick_gelu "
                             "is supported")
        heads[tower] = int(sub.get("num_attention_heads", default_heads))
    return heads


def _count_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m[1] for k in state if (m := pattern.match(k))})


def _infer_config(state: dict[str, torch.Tensor], heads: dict[str, int] | None,
                  where: Any) -> dict[str, Any]:
    """The architecture from tensor shapes (OpenAI's ``build_model`` rules: 64-wide heads),
    the method settings from the defaults; a shipped config's name when the shapes match one."""
    heads = heads or {}
    try:
        conv = state["clip.visual.conv1.weight"]
        grid = round((state["clip.visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_width, patch = conv.shape[0], conv.shape[-1]
        text_width = state["clip.ln_final.weight"].shape[0]
        arch = {
            "embed_dim": state["clip.text_projection"].shape[1],
            "vision": {"image_size": patch * grid, "patch_size": patch, "width": vision_width,
                       "layers": _count_layers(state, "clip.visual.transformer.resblocks."),
                       "heads": heads.get("vision", vision_width // 64)},
            "text": {"context_length": state["clip.positional_embedding"].shape[0],
                     "vocab_size": state["clip.token_embedding.weight"].shape[0],
                     "width": text_width, "heads": heads.get("text", text_width // 64),
                     "layers": _count_layers(state, "clip.transformer.resblocks.")},
        }
    except KeyError as err:
        raise EercfError(f"{where}: not a CLIP checkpoint (missing {err.args[0]})") from None
    if grid * grid + 1 != state["clip.visual.positional_embedding"].shape[0]:
        raise EercfError(f"{where}: visual positional embedding is not a square grid plus a class token")
    for tower in ("vision", "text"):
        if arch[tower]["heads"] < 1 or arch[tower]["layers"] < 1:
            raise EercfError(f"{where}: the {tower} tower has no layers or is narrower than one head")
    config = get_model_config("ViT-B-32")
    config.update(arch)
    config["name"] = next((n for n in list_models() if _same_arch(get_model_config(n), arch)),
                          "custom")
    method = config["eercf"]
    context, text_layers = arch["text"]["context_length"], arch["text"]["layers"]
    method["max_words"] = min(method["max_words"], context)
    method["max_frames"] = (state["frame_weight"].shape[0] if "frame_weight" in state
                            else min(method["max_frames"], context))
    temporal = _count_layers(state, "temporal.resblocks.")
    method["temporal_layers"] = temporal or min(method["temporal_layers"], text_layers)
    return config


def _same_arch(config: dict, arch: dict) -> bool:
    return all(config[k] == arch[k] for k in ("embed_dim", "vision", "text"))


def _check_fit(model: EERCF, state: dict[str, torch.Tensor], plain_clip: bool, where: Any) -> None:
    """One clear error for keys or shapes that do not fit the architecture."""
    own = model.state_dict()
    expected = {k for k in own if not (plain_clip and k.startswith(EERCF_ONLY))}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - own.keys())
    wrong = [f"{k} {list(state[k].shape)} (model: {list(own[k].shape)})"
             for k in sorted(expected & state.keys()) if state[k].shape != own[k].shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise EercfError(f"{where}: does not fit the {model.config['name']} architecture "
                         f"({'; '.join(problems)})")
