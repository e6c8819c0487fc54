"""Conditional denoising UNet (paper Sec. III-C, Fig. 4) with time, scale and output-size embeddings."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos(x f), sin(x f)] with f_i = exp(-ln(max_period) i / half) (cos first, as the release)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    args = x[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input precision."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


class ResBlock(nn.Module):
    """GN-SiLU-conv3x3, + Linear(SiLU(emb)) per channel, GN-SiLU-(dropout)-conv3x3, identity or 1x1 skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Self-attention over positions with the legacy head layout: each head's channels are [q | k | v]."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.num_heads = channels // head_channels
        self.norm = norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length = qkv.shape[2]
        ch = c // self.num_heads
        q, k, v = qkv.reshape(b * self.num_heads, 3 * ch, length).split(ch, dim=1)
        # softmax(q k^T / sqrt(ch)) v, as the release's q * ch^-1/4, k * ch^-1/4; the fused kernel never
        # materialises the length x length weights (memory linear in the number of latent positions).
        a = F.scaled_dot_product_attention(q.transpose(1, 2).unsqueeze(0), k.transpose(1, 2).unsqueeze(0),
                                           v.transpose(1, 2).unsqueeze(0), scale=1.0 / math.sqrt(ch))
        a = a.squeeze(0).transpose(1, 2).reshape(b, -1, length)
        return (x + self.proj_out(a)).reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """A sequence of layers where ResBlocks also receive the embedding."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def _embed_mlp(model_channels: int, emb_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))


class UNet(nn.Module):
    """eps = UNet(cat[z_t, c], t, scale, osize). Inputs are reflect-padded right/bottom to a multiple of 2^levels."""

    def __init__(self, in_channels: int = 8, out_channels: int = 4, model_channels: int = 64,
                 channel_mult=(1, 2, 2, 4), num_res_blocks: int = 2, attention_resolutions=(8,),
                 num_head_channels: int = 32, use_scale_embedding: bool = True, use_osize_embedding: bool = True):
        super().__init__()
        self.model_channels = model_channels
        emb_dim = 4 * model_channels
        self.time_embed = _embed_mlp(model_channels, emb_dim)
        self.scale_embed = _embed_mlp(model_channels, emb_dim) if use_scale_embedding else None
        self.osize_embed = _embed_mlp(model_channels, emb_dim) if use_osize_embedding else None
        self.multiple = 2 ** (len(channel_mult) - 1)

        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        chans = [model_channels]
        ch, ds = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_head_channels))
                self.input_blocks.append(EmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(
            ResBlock(ch, emb_dim, ch), AttentionBlock(ch, num_head_channels), ResBlock(ch, emb_dim, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb_dim, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_head_channels))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))

    def embedding(self, t: torch.Tensor, scale: torch.Tensor, osize: torch.Tensor) -> torch.Tensor:
        mc = self.model_channels
        emb = self.time_embed(sinusoid(t, mc))
        if self.scale_embed is not None:
            emb = emb + self.scale_embed(sinusoid(scale, mc))
        if self.osize_embed is not None:
            emb = emb + self.osize_embed(sinusoid(osize, mc))
        return emb

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pad right/bottom to a multiple of 2^levels, as the release does.

        Reflect padding needs pad < size; the release crashes there (outputs under 40 px). We pad by
        reflecting as far as possible and replicating the rest, identical wherever the release works.
        """
        h, w = x.shape[2], x.shape[3]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        while ph or pw:
            rh, rw = min(ph, h - 1), min(pw, w - 1)
            if rh == 0 and rw == 0:
                return F.pad(x, (0, pw, 0, ph), mode="replicate")
            x = F.pad(x, (0, rw, 0, rh), mode="reflect")
            h, w, ph, pw = h + rh, w + rw, ph - rh, pw - rw
        return x

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale: torch.Tensor, osize: torch.Tensor,
                emb: torch.Tensor | None = None) -> torch.Tensor:
        h_in, w_in = x.shape[2], x.shape[3]
        if emb is None:
            emb = self.embedding(t, scale, osize)
        h = self.pad(x)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)[:, :, :h_in, :w_in]
