"""CLIP towers in OpenAI's parameter layout, so OpenAI and CLIP4Clip-family state dicts load
without renaming. The visual tower returns every token after ``ln_post @ proj`` because EERCF
needs the patch tokens as well as the frame (class) token."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32, as OpenAI's CLIP does, so fp16/bf16 weights stay stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask,
                          key_padding_mask=key_padding_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of pre-norm residual attention blocks (batch-first)."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int):
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[N, 3, H, W]`` -> ``[N, 1 + P, D]``: token 0 the image, 1..P the patches."""
        x = self.conv1(images.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x) @ self.proj


class CLIP(nn.Module):
    """OpenAI CLIP (ViT image tower) with parameter names identical to the released models."""

    def __init__(self, embed_dim: int, vision: dict, text: dict):
        super().__init__()
        self.context_length = text["context_length"]
        self.visual = VisionTransformer(vision["image_size"], vision["patch_size"], vision["width"],
                                        vision["layers"], vision["heads"], embed_dim)
        self.transformer = Transformer(text["width"], text["layers"], text["heads"])
        self.token_embedding = nn.Embedding(text["vocab_size"], text["width"])
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, text["width"]))
        self.ln_final = LayerNorm(text["width"])
        self.text_projection = nn.Parameter(torch.empty(text["width"], embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation, for models trained from scratch (e.g. ``tiny``)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for tower in (self.transformer, self.visual.transformer):
            width, layers = tower.width, tower.layers
            proj_std = width ** -0.5 * (2 * layers) ** -0.5
            attn_std, fc_std = width ** -0.5, (2 * width) ** -0.5
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``[T, L]`` -> the projected hidden state at the EOT token (the arg-max id)."""
        length = ids.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens exceed the context length {self.context_length}")
        # Under the causal mask no EOT sees the padding after it: run only up to the batch's
        # last EOT (short captions padded to 32 tokens cost what their length costs).
        eot_position = ids.argmax(dim=-1)
        length = int(eot_position.max()) + 1
        ids = ids[:, :length]
        x = self.token_embedding(ids) + self.positional_embedding[:length].to(self.token_embedding.weight.dtype)
        causal = torch.full((length, length), float("-inf"), device=ids.device).triu_(1)
        x = self.ln_final(self.transformer(x, attn_mask=causal.to(x.dtype)))
        eot = x[torch.arange(ids.shape[0], device=ids.device), eot_position]
        return eot @ self.text_projection
