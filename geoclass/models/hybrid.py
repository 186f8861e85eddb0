"""A CNN-ViT hybrid: convolutions for local texture, a transformer for global context."""

from __future__ import annotations

import torch
from torch import nn

from geoclass.models.cnn import ResidualBlock, conv_bn_act


class HybridCNNViT(nn.Module):
    """Convolutional stages reduce a chip to a grid of tokens; a transformer encoder mixes them.

    For a 64x64 chip the CNN yields an 8x8 map (64 tokens of ``embed_dim``), small enough that
    attention is cheap on a CPU. A learned position embedding is interpolated when the chip size
    differs from the one the model was built for, so the model also runs on other window sizes.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, chip_size: int = 64, embed_dim: int = 128,
                 depth: int = 2, num_heads: int = 4, widths: tuple[int, int, int] = (32, 64, 128),
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(in_chans, 24), conv_bn_act(24, widths[0], stride=2))
        self.cnn = nn.Sequential(
            ResidualBlock(widths[0], widths[0]),
            ResidualBlock(widths[0], widths[1], stride=2),
            ResidualBlock(widths[1], widths[2], stride=2),
        )
        self.proj = nn.Conv2d(widths[2], embed_dim, 1)
        self.grid = max(chip_size // 8, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, self.grid, self.grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=embed_dim * 2, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.proj(self.cnn(self.stem(x)))
        pos = self.pos_embed
        if pos.shape[-2:] != fmap.shape[-2:]:
            pos = nn.functional.interpolate(pos, size=fmap.shape[-2:], mode="bilinear", align_corners=False)
        tokens = (fmap + pos).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        encoded = self.norm(self.encoder(tokens))
        # Average the class token with the mean patch token: steadier than either alone on small data.
        pooled = 0.5 * (encoded[:, 0] + encoded[:, 1:].mean(dim=1))
        return self.head(pooled)
