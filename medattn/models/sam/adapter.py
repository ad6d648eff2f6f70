"""`sam_adapter`: SAM with a frozen ViT, Medical SAM Adapter's space and MLP adapters, and a position adapter.

After Medical SAM Adapter (Wu et al., 2023): in every block a bottleneck adapter on the attention output
and a second one beside the MLP, and a resized position embedding so the encoder takes inputs other than
1024 x 1024 (256, 512, ...). Only the adapters and the mask decoder train; the ViT and the prompt encoder
keep their pretrained weights.
"""

from __future__ import annotations

import torch
from torch import nn

from medattn.errors import ConfigError
from medattn.models.registry import register_model
from medattn.models.sam.checkpoint import load_checkpoint
from medattn.models.sam.model import SAM


class BottleneckAdapter(nn.Module):
    """x + up(GELU(down(x))) with a hidden width of `ratio` x the token width (up(GELU(down(x))) alone
    with ``residual=False``, the form of Medical SAM Adapter's MLP adapter).

    The down-projection starts at zero (weights and bias; GELU(0) = 0 and the up bias is zero too), so an
    adapter starts as the identity (as zero without the residual) and an adapted model exactly as the
    pretrained SAM: the adapters learn only the change the new data needs. Zeroing the down- rather than
    the up-projection (the LoRA choice) means the down-projection gets a gradient from the first step
    (GELU'(0) = 0.5). Medical SAM Adapter keeps PyTorch's random initialisation instead, so its adapted
    encoder starts off SAM's features.
    """

    def __init__(self, dim: int, ratio: float = 0.1, residual: bool = True):
        super().__init__()
        self.residual = residual
        hidden = max(1, round(dim * ratio))
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adapt tokens (..., dim)."""
        change = self.up(self.act(self.down(x)))
        return x + change if self.residual else change


@register_model(
    "sam_adapter",
    description=(
        "SAM with a frozen ViT, Medical SAM Adapter's space and MLP adapters in every block and a position "
        "adapter for any input size; adapters and mask decoder train. 2D."
    ),
    spatial_dims=(2,),
    tiny={"variant": "tiny"},
    tiny_size=48,
)
class SAMAdapter(SAM):
    """SAM adapted as Medical SAM Adapter does (Wu et al., "Medical SAM Adapter", 2023)
    [MedicineToken/Medical-SAM-Adapter, models/ImageEncoder/vit/adapter_block.py].

    Every ViT block gets two `BottleneckAdapter` s of hidden width ``adapter_ratio`` x D (0.25, their
    ``mlp_ratio``): the space adapter (Linear D -> ratio * D, GELU, Linear back, residual) on the attention
    output, and the MLP adapter (the same without the residual) beside the block's MLP on the same
    normalised tokens, added with the factor ``mlp_adapter_scale`` (0.5):
    x + mlp(norm2(x)) + 0.5 * mlp_adapter(norm2(x)). The encoder gets a `PositionAdapter`, so inputs may be
    any multiple of 16 pixels. Trainable: the adapters and the mask decoder (less the parts no output uses,
    as in `sam`); frozen: the ViT, its neck and the prompt encoder, as their training code freezes every
    encoder parameter but the adapters. A SAM/MedSAM checkpoint loads into it; only the adapters are then
    missing from the file.

    Where medattn differs from their code:

    - the adapters start as identities (zero down-projection, see `BottleneckAdapter`) instead of random,
      so training starts from SAM's own features;
    - the position adapter adds a learned depthwise correction (starting at zero) to the bicubically
      resized position embedding they use as is: with a frozen encoder, it is the one trainable place
      where positions at a new input size can be fitted;
    - their depth adapter for 3D volumes is left out: sam_adapter is 2D (volumes go slice by slice).

    Args:
        spatial_dims: must be 2.
        in_channels: image channels; 3 for the public checkpoints.
        out_channels: 1 (sigmoid logit) or classes with background (2 to 5), as in `sam`.
        variant: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` or ``"tiny"``.
        checkpoint: local SAM/MedSAM ``.pth`` file to load.
        freeze_prompt_encoder: keep the prompt encoder fixed (default, as in `sam`).
        adapter_ratio: adapter hidden width over token width, both adapters (0.25 as theirs).
        layout: ``"xy"`` for medattn's (B, C, W, H) tensors (default), ``"hw"`` for SAM's (B, C, H, W).
        mlp_adapter: the MLP adapter beside every block's MLP (off: the space adapters only).
        mlp_adapter_scale: factor on the MLP adapter's output (their ``scale``, 0.5).

    Example:
        >>> model = create("sam_adapter", 2, 3, 1, checkpoint="sam_vit_b_01ec64.pth")
        >>> model.parameter_count(trainable_only=True), model.parameter_count()
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        variant: str = "vit_b",
        checkpoint: str | None = None,
        freeze_prompt_encoder: bool = True,
        adapter_ratio: float = 0.25,
        layout: str = "xy",
        mlp_adapter: bool = True,
        mlp_adapter_scale: float = 0.5,
    ):
        if not 0 < adapter_ratio <= 1:
            raise ConfigError(f"adapter_ratio must be in (0, 1], got {adapter_ratio}")
        super().__init__(
            spatial_dims, in_channels, out_channels, variant, None, freeze_prompt_encoder, layout=layout
        )
        encoder = self.image_encoder
        dim = encoder.patch_embed.proj.out_channels
        for block in encoder.blocks:
            block.adapter = BottleneckAdapter(dim, adapter_ratio)
            if mlp_adapter:
                block.mlp_adapter = BottleneckAdapter(dim, adapter_ratio, residual=False)
                block.mlp_adapter_scale = mlp_adapter_scale
        self.accept_any_input_size()
        blocks = range(len(encoder.blocks))
        adapters = (
            "position_adapter.",
            *(f"blocks.{i}.adapter." for i in blocks),
            *(f"blocks.{i}.mlp_adapter." for i in blocks),
        )
        if checkpoint is not None:
            load_checkpoint(self, checkpoint, optional_prefixes=[f"image_encoder.{a}" for a in adapters])
        for name, parameter in encoder.named_parameters():
            if not name.startswith(adapters):
                parameter.requires_grad_(False)
