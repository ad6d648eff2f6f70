"""SAM's ViT image encoder: 16-pixel patches, windowed and global attention with relative positions, neck.

Parameter names and shapes are those of segment-anything's `ImageEncoderViT` (Kirillov et al. 2023, itself
adapted from ViTDet), so SAM and MedSAM checkpoints load into it unchanged. Attention runs through
PyTorch's scaled-dot-product attention with the decomposed relative positions as an additive bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medattn.errors import GeometryError
from medattn.models.sam.common import LayerNorm2d, MLPBlock


class PatchEmbed(nn.Module):
    """Image to patch tokens: a strided convolution, output channels last (B, H/p, W/p, D)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, H/p, W/p, D) of an image (B, C, H, W)."""
        return self.proj(x).permute(0, 2, 3, 1)


def get_rel_pos(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings (size, size, C) for one axis of a square query/key grid of `size` tokens.

    A table built for another grid (2 * trained size - 1 rows) is resized linearly, as in SAM: this is what
    lets the global-attention blocks run on smaller inputs.
    """
    rows = 2 * size - 1
    if rel_pos.shape[0] != rows:
        resized = F.interpolate(rel_pos.T.unsqueeze(0), size=rows, mode="linear")
        rel_pos = resized.squeeze(0).T
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + (size - 1)]


def decomposed_rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """The additive attention bias of MViTv2's decomposed relative positions, (B*heads, H*W, H*W).

    Args:
        q: unscaled queries (B*heads, H*W, head_dim).
        rel_pos_h: table for the vertical axis (2 * H' - 1, head_dim).
        rel_pos_w: table for the horizontal axis (2 * W' - 1, head_dim).
        grid: token grid (H, W) of the queries and keys.
    """
    h, w = grid
    r_h = get_rel_pos(h, rel_pos_h)
    r_w = get_rel_pos(w, rel_pos_w)
    batch, _, dim = q.shape
    r_q = q.reshape(batch, h, w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, r_h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, r_w)
    return (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(batch, h * w, h * w)


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, D) token grid, optionally with relative positions.

    Args:
        dim: token width.
        num_heads: attention heads.
        qkv_bias: learn a bias for queries, keys and values.
        use_rel_pos: add decomposed relative-position terms to the attention logits.
        input_size: the token grid the relative tables are sized for (a window, or the whole grid).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        input_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("relative positions need the input_size they are built for")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over all H*W tokens of each (B, H, W, D) item."""
        batch, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(batch, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, H*W, head_dim) each
        bias = None
        if self.use_rel_pos:
            flat_q = q.reshape(batch * self.num_heads, h * w, -1)
            bias = decomposed_rel_pos_bias(flat_q, self.rel_pos_h, self.rel_pos_w, (h, w))
            bias = bias.view(batch, self.num_heads, h * w, h * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, h, w, -1)
        return self.proj(out)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split (B, H, W, C) into (B * windows, window, window, C), zero-padding H and W up to the window.

    Returns:
        The windows and the padded grid (Hp, Wp).
    """
    batch, h, w, channels = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(batch, hp // window_size, window_size, wp // window_size, window_size, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, channels)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: reassemble (B, Hp, Wp, C) and drop the padding to (B, H, W, C)."""
    hp, wp = padded
    h, w = grid
    batch = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.view(batch, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, -1)
    return x[:, :h, :w, :].contiguous() if (hp > h or wp > w) else x


def resize_position_embedding(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """SAM's absolute position embedding (1, H, W, D) resized bicubically to a token grid (h, w).

    The one place the SAM family fits positions to an input of another size: Medical SAM Adapter's encoder
    resizes its embedding in the same way (bicubic, ``align_corners=False``) on every forward. At the
    embedding's own grid it is returned unchanged.
    """
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    positions = F.interpolate(pos_embed.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
    return positions.permute(0, 2, 3, 1)


class PositionAdapter(nn.Module):
    """The absolute position embedding resized to the input's token grid (`resize_position_embedding`),
    optionally plus a learned depthwise 3x3 correction that starts at zero.

    Setting one on an `ImageEncoderViT` (`SAM.accept_any_input_size`) lets the encoder take any multiple of
    16 pixels. The global blocks' relative-position tables need no adapter: they are resized linearly to the
    grid in every forward, as SAM does.

    Args:
        dim: token width.
        correction: learn the depthwise correction (sam_adapter, ccsam); without it the adapter has no
            parameters and is the plain resize of Medical SAM Adapter.
    """

    def __init__(self, dim: int, correction: bool = True):
        super().__init__()
        self.correction: nn.Conv2d | None = None
        if correction:
            self.correction = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
            nn.init.zeros_(self.correction.weight)
            nn.init.zeros_(self.correction.bias)

    def forward(self, pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding (1, h, w, D) for a token grid (h, w), from SAM's (1, H, W, D)."""
        positions = resize_position_embedding(pos_embed, grid)
        if self.correction is None:
            return positions
        channels_first = positions.permute(0, 3, 1, 2)
        return (channels_first + self.correction(channels_first)).permute(0, 2, 3, 1)


class Block(nn.Module):
    """A pre-norm transformer block with windowed (window_size > 0) or global attention.

    Two adapter slots, identities here, take Medical SAM Adapter's placements: `adapter` is applied to the
    attention output before the residual sum (their Space_Adapter), and `mlp_adapter`, when set, runs beside
    the MLP on the same normalised tokens, its output scaled by `mlp_adapter_scale` and added
    (their MLP_Adapter): x + mlp(norm2(x)) + scale * mlp_adapter(norm2(x)).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size
        self.adapter: nn.Module = nn.Identity()
        self.mlp_adapter: nn.Module | None = None
        self.mlp_adapter_scale = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One block on tokens (B, H, W, D)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            grid = (x.shape[1], x.shape[2])
            x, padded = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded, grid)
        else:
            x = self.attn(x)
        x = shortcut + self.adapter(x)
        normed = self.norm2(x)
        if self.mlp_adapter is None:
            return x + self.mlp(normed)
        return x + self.mlp(normed) + self.mlp_adapter_scale * self.mlp_adapter(normed)


class ImageEncoderViT(nn.Module):
    """SAM's image encoder: (B, C, H, W) image -> (B, out_chans, H/16, W/16) embedding.

    Args:
        img_size: the input edge (pixels) the absolute position embedding is built for (1024 for SAM).
        patch_size: patch edge in pixels.
        in_chans: image channels (3 for the public checkpoints).
        embed_dim: token width (768 / 1024 / 1280 for ViT-B / L / H).
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: feed-forward width over token width.
        out_chans: embedding channels after the neck (256 for SAM).
        qkv_bias: learn a bias for queries, keys and values.
        use_abs_pos: add a learned absolute position embedding.
        use_rel_pos: add decomposed relative positions in attention.
        window_size: window edge (tokens) of the windowed blocks.
        global_attn_indexes: the blocks that attend over the whole grid instead of windows.
        norm_eps: LayerNorm epsilon (SAM uses 1e-6).

    `position_adapter` is None here, so inputs must be exactly `img_size` (`sam`); the SAM-family adapters
    (sam_adapter, ccsam, medsam_ca) set a `PositionAdapter` that fits the embedding to the input's grid.
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        grid = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, *grid, embed_dim))
        self.position_adapter: nn.Module | None = None
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=grid,
                norm_eps=norm_eps,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def embed(self, x: torch.Tensor, token_adapter: nn.Module | None = None) -> torch.Tensor:
        """Patch tokens plus absolute positions, (B, H/16, W/16, embed_dim): the input of the first block.

        Args:
            x: images (B, C, H, W).
            token_adapter: applied to the patch tokens before the positions are added (ccsam's input
                adapter).
        """
        tokens = self.patch_embed(x)
        if token_adapter is not None:
            tokens = token_adapter(tokens)
        if self.pos_embed is None:
            return tokens
        grid = tuple(tokens.shape[1:3])
        if self.position_adapter is not None:
            return tokens + self.position_adapter(self.pos_embed, grid)
        if grid != tuple(self.pos_embed.shape[1:3]):
            raise GeometryError(
                f"the SAM image encoder is built for {self.img_size}x{self.img_size} pixel inputs, got "
                f"{tuple(x.shape[2:])}: resize the image to {self.img_size} (medattn.models.sam.preprocess) "
                "or use sam_adapter, ccsam or medsam_ca, which resize the position embedding"
            )
        return tokens + self.pos_embed

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The embedding and every block's output, for models that fuse intermediate ViT features.

        Returns:
            The neck's embedding (B, out_chans, H/16, W/16) and the output of each block in order, channels
            last (B, H/16, W/16, embed_dim) as SAM keeps its tokens.
        """
        tokens = self.embed(x)
        features = []
        for block in self.blocks:
            tokens = block(tokens)
            features.append(tokens)
        return self.neck(tokens.permute(0, 3, 1, 2)), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The image embedding (B, out_chans, H/16, W/16)."""
        tokens = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.neck(tokens.permute(0, 3, 1, 2))
