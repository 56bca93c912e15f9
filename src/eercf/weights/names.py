"""Model names that mean released weights: OpenAI's CLIP checkpoints (by the sha256 their URL
names) and Hugging Face CLIP repositories (``hf:owner/repo``)."""
from __future__ import annotations

# name -> sha256 of the file, which is also the folder of OpenAI's URL
OPENAI_MODELS = {
    "ViT-B-32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    "ViT-B-16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
}
HF_PREFIX = "hf:"


def has_release(name: str) -> bool:
    """Whether ``eercf download NAME`` can fetch weights for ``name``."""
    return name in OPENAI_MODELS or name.startswith(HF_PREFIX)
