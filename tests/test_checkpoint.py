"""Checkpoints: a small random EERCF is exported into every foreign layout (written here,
independently of the importers), loaded back, and must give the same weights and features;
our own folder round-trips bit-exactly; broken files give one EercfError naming the file."""
from __future__ import annotations

import copy
import json
import warnings
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import eercf
from eercf.cli import main
from eercf.model.config import get_model_config, merge
from eercf.errors import EercfError
from eercf.model.tokenizer import CLIPTokenizer

BPE_PATH = Path(str(resources.files("eercf.model") / "bpe_simple_vocab_16e6.txt.gz"))  # shipped
# heads = width // 64, as the shape-reading importers assume (OpenAI's rule)
SMALL = {"name": "small", "embed_dim": 64,
         "vision": {"image_size": 32, "patch_size": 16, "width": 128, "layers": 2, "heads": 2},
         "text": {"context_length": 32, "vocab_size": 1024, "width": 64, "heads": 1, "layers": 4}}
OPENAI_SCALARS = {"input_resolution": 32, "context_length": 32, "vocab_size": 1024}


def small_config() -> dict:
    return merge(get_model_config("tiny"), SMALL)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """No test may see (or write) the user's downloaded tokenizer."""
    monkeypatch.setenv("EERCF_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    from eercf.synthetic.scenes import annotate, plan

    videos = plan(300, seed=0)
    captions = [text for pairs in annotate(videos, seed=0).values() for _, text in pairs]
    return CLIPTokenizer.train(captions, vocab_size=600)


@pytest.fixture(scope="module")
def plain() -> eercf.EERCF:
    """A CLIP with every parameter random (so a swapped name shows), plus the EERCF parts
    initialised as an import of a plain CLIP initialises them."""
    torch.manual_seed(0)
    model = eercf.EERCF(small_config())
    with torch.no_grad():
        for p in model.clip.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.init_temporal_from_text()
    return model.eval()


@pytest.fixture(scope="module")
def trained(plain) -> eercf.EERCF:
    """As ``plain`` with W_g, W_f, the temporal block and frame positions trained (random)."""
    torch.manual_seed(1)
    model = copy.deepcopy(plain)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("clip."):
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    ids = torch.randint(1, 1000, (3, 32))
    ids[:, 0], ids[:, 20:] = 1022, 0
    ids[:, 19] = 1023
    return ids, torch.randn(2, 12, 3, 32, 32)


def assert_same_model(loaded: eercf.EERCF, source: eercf.EERCF, inputs) -> None:
    want = source.state_dict()
    got = loaded.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    ids, frames = inputs
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids), source.encode_text(ids), rtol=0, atol=0)
        a, b = loaded.encode_video(frames), source.encode_video(frames)
    for field in ("video", "frames", "temporal", "patches", "mask"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0)


# ---------------------------------------------------------------- exporters (test-side)
def openai_state(model: eercf.EERCF, dtype=torch.float32) -> dict[str, torch.Tensor]:
    state = {k.removeprefix("clip."): v.to(dtype) for k, v in model.state_dict().items()
             if k.startswith("clip.")}
    return state | {k: torch.tensor(v) for k, v in OPENAI_SCALARS.items()}


def save_torchscript(state: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive holding the tensors under OpenAI's module tree, like the
    released ``ViT-B-32.pt`` (a scripted module whose ``state_dict()`` has these names)."""
    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        node = root
        for part in parents:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        node.register_buffer(leaf, value.clone())
    with warnings.catch_warnings():  # torch deprecates TorchScript, but OpenAI ships it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(root), str(path))


def huggingface_state(model: eercf.EERCF) -> dict[str, torch.Tensor]:
    """``transformers.CLIPModel`` parameter names and layouts."""
    clip = {k.removeprefix("clip."): v for k, v in model.state_dict().items() if k.startswith("clip.")}
    out = {"logit_scale": clip["logit_scale"],
           "text_projection.weight": clip["text_projection"].T.contiguous(),
           "visual_projection.weight": clip["visual.proj"].T.contiguous(),
           "text_model.embeddings.token_embedding.weight": clip["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": clip["positional_embedding"],
           "text_model.embeddings.position_ids": torch.arange(32)[None],
           "text_model.final_layer_norm.weight": clip["ln_final.weight"],
           "text_model.final_layer_norm.bias": clip["ln_final.bias"],
           "vision_model.embeddings.class_embedding": clip["visual.class_embedding"],
           "vision_model.embeddings.patch_embedding.weight": clip["visual.conv1.weight"],
           "vision_model.embeddings.position_embedding.weight": clip["visual.positional_embedding"],
           "vision_model.embeddings.position_ids": torch.arange(5)[None]}
    for ours, theirs in (("visual.ln_pre", "vision_model.pre_layrnorm"),
                         ("visual.ln_post", "vision_model.post_layernorm")):
        out[f"{theirs}.weight"], out[f"{theirs}.bias"] = clip[f"{ours}.weight"], clip[f"{ours}.bias"]
    for ours, theirs, layers in (("transformer", "text_model", 4), ("visual.transformer", "vision_model", 2)):
        for i in range(layers):
            src, dst = f"{ours}.resblocks.{i}", f"{theirs}.encoder.layers.{i}"
            for part in ("weight", "bias"):
                q, k, v = clip[f"{src}.attn.in_proj_{part}"].chunk(3)
                out[f"{dst}.self_attn.q_proj.{part}"] = q.contiguous()
                out[f"{dst}.self_attn.k_proj.{part}"] = k.contiguous()
                out[f"{dst}.self_attn.v_proj.{part}"] = v.contiguous()
                out[f"{dst}.self_attn.out_proj.{part}"] = clip[f"{src}.attn.out_proj.{part}"]
                out[f"{dst}.layer_norm1.{part}"] = clip[f"{src}.ln_1.{part}"]
                out[f"{dst}.layer_norm2.{part}"] = clip[f"{src}.ln_2.{part}"]
                out[f"{dst}.mlp.fc1.{part}"] = clip[f"{src}.mlp.c_fc.{part}"]
                out[f"{dst}.mlp.fc2.{part}"] = clip[f"{src}.mlp.c_proj.{part}"]
    return out


HF_CONFIG = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 64,
             "text_config": {"hidden_size": 64, "num_attention_heads": 1, "num_hidden_layers": 4,
                             "hidden_act": "quick_gelu", "vocab_size": 1024},
             "vision_config": {"hidden_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2,
                               "hidden_act": "quick_gelu", "image_size": 32, "patch_size": 16}}


def authors_state(model: eercf.EERCF) -> dict[str, torch.Tensor]:
    """The authors' names (their ``torch.save(model.state_dict())`` under DDP: ``module.``)."""
    names = {"global_weight": "global_mat_weight", "frame_weight": "frame_logit_weight"}
    out = {}
    for key, value in model.state_dict().items():
        key = names.get(key, key).replace("temporal.", "transformerClip.", 1)
        out[f"module.{key}"] = value
    out["module.local_mat_weight"] = torch.eye(64)  # an unused ablation weight, to be ignored
    return out


# ---------------------------------------------------------------- import formats
def test_openai_torchscript(plain, inputs, tmp_path):
    path = tmp_path / "ViT-small.pt"
    save_torchscript(openai_state(plain), path)
    assert_same_model(eercf.load_model(path), plain, inputs)


def test_openai_plain_state_dict(plain, inputs, tmp_path):
    path = tmp_path / "clip.pt"
    torch.save(openai_state(plain), path)
    model = eercf.load_model(path)
    assert_same_model(model, plain, inputs)
    assert model.config["eercf"] == small_config()["eercf"]
    assert model.config["text"] == SMALL["text"] and model.config["vision"] == SMALL["vision"]


def test_openai_fp16_loads_as_fp32(plain, inputs, tmp_path):
    path = tmp_path / "half.pt"
    save_torchscript(openai_state(plain, torch.float16), path)
    model = eercf.load_model(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(inputs[0]), plain.encode_text(inputs[0]),
                                   rtol=0, atol=5e-3)


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_huggingface_folder(plain, inputs, tmp_path, tokenizer, weights):
    folder = tmp_path / "hf"
    folder.mkdir()
    state = huggingface_state(plain)
    if weights.endswith(".safetensors"):
        save_file(state, str(folder / weights))
    else:
        torch.save(state, folder / weights)
    (folder / "config.json").write_text(json.dumps(HF_CONFIG))
    tokenizer.save(folder / "tokenizer.json")
    model = eercf.load_model(folder)
    assert_same_model(model, plain, inputs)
    assert model.tokenizer is not None and model.tokenizer.vocab_size == tokenizer.vocab_size


def test_huggingface_other_activation_refused(plain, tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(huggingface_state(plain), str(folder / "model.safetensors"))
    config = merge(HF_CONFIG, {"text_config": {"hidden_act": "gelu"}})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EercfError, match="hidden_act"):
        eercf.load_model(folder)


def test_authors_checkpoint(trained, inputs, tmp_path):
    path = tmp_path / "pytorch_model.bin.1"
    torch.save(authors_state(trained), path)
    assert_same_model(eercf.load_model(path), trained, inputs)


def test_random_weights_only_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("EERCF_HOME", str(tmp_path / "home"))
    model = eercf.load_model("tiny", pretrained=False)
    assert model.config == get_model_config("tiny") and model.tokenizer is None
    assert torch.equal(model.global_weight, torch.eye(128))
    with pytest.raises(EercfError, match="no released weights.*pretrained=False"):
        eercf.load_model("tiny")
    with pytest.raises(EercfError, match="`eercf download ViT-B-32`"):
        eercf.load_model("ViT-B-32")
    with pytest.raises(EercfError, match="not a model name"):
        eercf.load_model("ViT-X-99")


def test_a_name_means_the_weights_eercf_download_stored(trained, tmp_path, monkeypatch):
    from eercf.paths import pretrained_dir

    monkeypatch.setenv("EERCF_HOME", str(tmp_path / "home"))
    eercf.save_model(trained, pretrained_dir("ViT-B-32"))
    loaded = eercf.load_model("ViT-B-32")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 trained.state_dict().values()))


# ---------------------------------------------------------------- our format
def test_save_load_round_trip_bit_exact(trained, tokenizer, inputs, tmp_path):
    model = copy.deepcopy(trained)
    model.tokenizer = tokenizer
    folder = eercf.save_model(model, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    (tmp_path / "plain").mkdir()  # the checkpoint gets ordinary (umask) permissions
    assert folder.stat().st_mode == (tmp_path / "plain").stat().st_mode
    assert len({(folder / n).stat().st_mode for n in ("config.json", "model.safetensors")}) == 1
    (tmp_path / "plain").rmdir()
    loaded = eercf.load_model(folder)
    assert loaded.config == model.config
    assert_same_model(loaded, model, inputs)
    texts = ["a little girl does gymnastics", "a person is connecting something to system"]
    assert torch.equal(loaded.tokenize(texts), model.tokenize(texts))
    # saving again replaces the checkpoint and leaves no staging folders behind
    eercf.save_model(model, folder)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_save_refuses_folder_with_other_files(trained, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(EercfError, match="notes.txt"):
        eercf.save_model(trained, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_bare_safetensors_infers_architecture(trained, inputs, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    assert_same_model(eercf.load_model(path), trained, inputs)


# ---------------------------------------------------------------- tokenizer resolution
def test_tokenizer_resolution(plain, tokenizer, tmp_path, monkeypatch):
    path = tmp_path / "clip.pt"
    torch.save(openai_state(plain), path)
    assert eercf.load_model(path).tokenizer is None
    with pytest.raises(EercfError, match="no tokenizer"):
        eercf.load_model(path).tokenize(["a dog"])
    # one beside the file is found, the argument wins over it
    tokenizer.save(tmp_path / "tokenizer.json")
    assert eercf.load_model(path).tokenizer.vocab_size == tokenizer.vocab_size
    with pytest.raises(EercfError, match="49408 ids"):
        eercf.load_model(path, tokenizer=BPE_PATH)
    model = eercf.load_model(path, tokenizer=tokenizer)
    assert model.tokenize(["a dog"]).shape == (1, 32)


def test_shipped_bpe_serves_every_model_with_clips_vocabulary(tmp_path):
    """No tokenizer file anywhere: a CLIP-vocabulary model gets OpenAI's BPE from the package."""
    assert eercf.load_model("tiny", pretrained=False).tokenizer is None  # 2048 ids: not CLIP's
    openai_vocab = eercf.EERCF(merge(small_config(), {"text": {"vocab_size": 49408}}))
    torch.save(openai_state(openai_vocab) | {"vocab_size": torch.tensor(49408)}, tmp_path / "clip.pt")
    assert eercf.load_model(tmp_path / "clip.pt").tokenize(["a dog"])[0, :3].tolist() == [49406, 320, 1929]


# ---------------------------------------------------------------- broken inputs
def test_broken_files(plain, tmp_path):
    good = tmp_path / "good.pt"
    torch.save(openai_state(plain), good)
    blob = good.read_bytes()
    cases = {
        "empty.pt": (b"", "empty"),
        "truncated.pt": (blob[: len(blob) // 2], "not a readable checkpoint"),
        "garbage.pt": (bytes(range(256)) * 64, "not a readable checkpoint"),
        "notes.pt": (b"just some text\n", "not a readable checkpoint"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(EercfError, match=message) as err:
            eercf.load_model(tmp_path / name)
        assert name in str(err.value)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(EercfError, match="list.pt: not a checkpoint"):
        eercf.load_model(tmp_path / "list.pt")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(EercfError, match="other.pt: not a CLIP or EERCF checkpoint"):
        eercf.load_model(tmp_path / "other.pt")
    with pytest.raises(EercfError, match="no such checkpoint file"):
        eercf.load_model(tmp_path / "missing.pt")


def test_wrong_architecture(plain, trained, tmp_path):
    state = openai_state(plain)
    del state["transformer.resblocks.1.mlp.c_fc.weight"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(EercfError, match=r"missing\.pt: does not fit .*missing: clip\.transformer\.resblocks\.1\.mlp\.c_fc\.weight"):
        eercf.load_model(tmp_path / "missing.pt")
    folder = eercf.save_model(trained, tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["embed_dim"] = config["text"]["width"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EercfError, match="ckpt/model.safetensors: does not fit .*wrong shape"):
        eercf.load_model(folder)
    del config["vision"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EercfError, match="ckpt/model.safetensors: incomplete or malformed model config"):
        eercf.load_model(folder)


def test_truncated_safetensors_in_folder(trained, tmp_path):
    folder = eercf.save_model(trained, tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(EercfError, match="model.safetensors: not a readable checkpoint"):
        eercf.load_model(folder)


# ---------------------------------------------------------------- the CLI
def test_convert_cli(plain, tokenizer, inputs, tmp_path, capsys):
    src = tmp_path / "ViT-small.pt"
    save_torchscript(openai_state(plain), src)
    tok = tmp_path / "tok" / "tokenizer.json"
    tok.parent.mkdir()
    tokenizer.save(tok)
    dst = tmp_path / "converted"
    assert main(["convert", str(src), str(dst), "--tokenizer", str(tok), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "openai" and info["tokenizer"] is True
    assert info["parameters"] == sum(p.numel() for p in plain.parameters())
    assert_same_model(eercf.load_model(dst), plain, inputs)
    assert zipfile.is_zipfile(src)  # the source is left alone

    assert main(["convert", str(tmp_path / "nope.pt"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.pt" in err
