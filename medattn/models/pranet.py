"""PraNet: parallel reverse attention network for polyp segmentation (Fan et al. 2020), 2D."""

from __future__ import annotations

import torch
from torch import nn

from medattn.errors import ConfigError
from medattn.models.backbones import Backbone, load_backbone
from medattn.models.base import SegmentationModel
from medattn.models.blocks import NORMS, resize
from medattn.models.layouts import PRANET_OFFICIAL, RES2NET_V1B, torchvision_resnet
from medattn.models.pranet_blocks import (
    EXPANSION,
    ConcatDecoder,
    PartialDecoder,
    ReceptiveFieldBlock,
    Res2NetEncoder,
    ResNetEncoder,
    ReverseAttentionStage,
    conv_norm,
)
from medattn.models.registry import register_model

BACKBONES = {"res2net": Res2NetEncoder, "resnet": ResNetEncoder}


@register_model(
    "pranet",
    description="Parallel reverse attention (Fan et al. 2020): RFB, partial decoder, reverse attention; 2D.",
    spatial_dims=(2,),
    deep_supervision=True,
    tiny={"width": 8, "blocks": (1, 1, 1, 1), "channels": 8},
    tiny_size=32,
    # Res2Net-50 (30 M parameters) takes ~9x a MONAI 2D UNet's step on a CPU; a quarter width (1.1 M) ~2.5x.
    cpu_options={"width": 16, "channels": 16, "blocks": [1, 1, 2, 1]},
    loss="structure",  # weighted BCE + weighted IoU, as the paper trains
    head_weights=(1.0,) * 4,  # four maps at input size, summed in the official code
    multi_scale=True,  # each batch at 0.75, 1 and 1.25 of the patch size, as MyTrain.py
)
class PraNet(SegmentationModel):
    """PraNet, the parallel reverse attention network (Fan et al., MICCAI 2020, arXiv:2006.11392).

    Official code (PyTorch): github.com/DengPingFan/PraNet (lib/PraNet_Res2Net.py, MyTrain.py). Where the
    paper and the code differ medattn follows the code.

    Architecture: a backbone gives features at 1/8, 1/16 and 1/32 of the input. A receptive-field block
    (`ReceptiveFieldBlock`) reduces each to `channels`; the partial decoder (`PartialDecoder`) multiplies
    and concatenates them into a global map at 1/8. Three reverse-attention stages then refine it, from
    coarse to fine (1/32, 1/16, 1/8): the current map is resized to the stage's grid, the stage's backbone
    features are weighted by 1 - sigmoid(map), a few convs make a correction that is added to the map.
    Every conv is conv + norm; as the code, RFB and decoder convs have no activation (its BasicConv2d
    never applies its ReLU) and the 1-channel heads end in batch norm. The reverse-attention stages use
    1x1 to 4 x width channels and three 5x5 convs at 1/32, 1x1 to width channels and two 3x3 convs at
    1/16 and 1/8 (256 and 64 channels at the default width, as the code).

    Outputs and the medattn contract: PraNet is binary and predicts one logit map f per pixel. With
    ``out_channels=1`` the network returns f (a sigmoid logit); with ``out_channels=2`` it returns
    cat([0, f]), whose softmax over channels is exactly [1 - sigmoid(f), sigmoid(f)], so softmax-based
    pipelines get PraNet's probabilities. With K > 2 classes it predicts K - 1 foreground maps and
    returns cat([0, f_1..f_{K-1}]) (background is the reference logit); the reverse attention weights
    use the largest foreground logit, 1 - sigmoid(max_k f_k), one weight per pixel. In eval mode (and
    without deep supervision) the output is the last stage's map (1/8), upsampled to the input size, as
    the code's test script. In train mode with deep supervision a list of 4 logits, all at the input
    size: the last stage (1/8) first, then the stages at 1/16 and 1/32, then the global map; the code
    sums their structure losses with equal weights (``DeepSupervisionLoss(create_loss("structure", ...),
    weights=[1.0] * 4)``).

    `attention_maps()` holds the reverse-attention weights 1 - sigmoid(map) of the three stages:
    ``stages.0.attention`` (1/32), ``stages.1.attention`` (1/16), ``stages.2.attention`` (1/8).

    Ablation switches: ``rfb=False`` replaces each RFB by a 1x1 conv + norm + ReLU to `channels`;
    ``partial_decoder=False`` makes the global map from the three features upsampled and concatenated
    (`ConcatDecoder`); ``reverse_attention=False`` keeps the stages but feeds them unweighted features,
    so the ablation measures the reverse weighting alone at the same parameter count.

    Pretrained weights: the backbone starts from random weights unless ``backbone_weights`` names a local
    file (nothing is downloaded; the paper fine-tunes an ImageNet Res2Net-50 v1b): the Res2Net code's
    ``res2net50_v1b_26w_4s`` state dict (``conv1.0.weight``, ``layer1.0.convs.0.weight``, ...) for
    ``backbone="res2net"``, torchvision's ResNet-50 for ``"resnet"``, or a medattn pranet model.pt. A
    one-channel network gets the RGB stem's filters summed. The official full checkpoint (PraNet-19.pth)
    maps onto the whole network (`medattn.models.layouts.PRANET_OFFICIAL`; `medattn models load-check`).
    `width` and `blocks` scale the backbone down (then no ImageNet file fits). Paper: 352 x 352 inputs,
    about 50 FPS on a GPU.

    Defaults (Res2Net-50 v1b layout, width 64, blocks (3, 4, 6, 3), 32 RFB channels; 3 input channels,
    2 classes): 30.5 M parameters (backbone 23.7 M), 26.0 GFLOP (13.0 G multiply-adds) per 352 x 352
    frame. The official model object holds 32.55 M, the 2.05 M more being Res2Net's unused ImageNet
    classifier. With an official checkpoint mapped key by key (`PRANET_OFFICIAL`), the network computes
    the official code's map (tests/models/test_backbones.py, against a PraNet in the official layout).

    Args:
        spatial_dims: 2 (PraNet is a 2D network).
        in_channels: image channels (3 for RGB endoscopy frames).
        out_channels: classes including background; 1 = one sigmoid logit (see above).
        backbone: "res2net" (the code's Res2Net-50 v1b layout) or "resnet" (MONAI's ResNet, bottleneck).
        width: backbone base width (64 = Res2Net-50 / ResNet-50); stage channels are 4, 8, 16, 32 x width.
        blocks: bottleneck blocks per backbone stage.
        channels: RFB and partial-decoder width (32 in the code).
        norm: "batch" (the code), "instance" or "group".
        rfb: receptive-field blocks on the three deep features.
        partial_decoder: the multiplicative partial decoder for the global map.
        reverse_attention: weight each stage's features by 1 - sigmoid(map).
        deep_supervision: return the four maps in train mode.
        backbone_weights: local file with pretrained backbone weights (see above); not kept in packages.

    Example:
        >>> model = PraNet(in_channels=3, out_channels=2).eval()
        >>> logits = model(torch.zeros(1, 3, 352, 352))  # (1, 2, 352, 352)
        >>> weights = model.attention_maps()  # {"stages.0.attention": (1, 1, 352, 352), ...}
    """

    encoder_prefixes = ("backbone",)

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 2,
        *,
        backbone: str = "res2net",
        width: int = 64,
        blocks: tuple[int, ...] = (3, 4, 6, 3),
        channels: int = 32,
        norm: str = "batch",
        rfb: bool = True,
        partial_decoder: bool = True,
        reverse_attention: bool = True,
        deep_supervision: bool = True,
        backbone_weights: str | None = None,
    ):
        super().__init__(
            spatial_dims, in_channels, out_channels, deep_supervision=deep_supervision, size_divisor=32
        )
        if spatial_dims != 2:
            raise ConfigError(f"pranet is a 2D network; got spatial_dims={spatial_dims}")
        if backbone not in BACKBONES:
            raise ConfigError(f"backbone must be one of {', '.join(BACKBONES)}; got {backbone!r}")
        if norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        if width < 4 or channels < 1 or len(blocks) != 4 or min(blocks) < 1:
            raise ConfigError(
                f"pranet needs width >= 4, channels >= 1 and four backbone stages of >= 1 block; got "
                f"width={width}, channels={channels}, blocks={tuple(blocks)}"
            )
        maps = max(out_channels - 1, 1)
        self.backbone = BACKBONES[backbone](in_channels, width, tuple(blocks), norm)
        features = [width * 2**level * EXPANSION for level in (1, 2, 3)]  # 1/8, 1/16, 1/32
        self.rfb = nn.ModuleList(
            ReceptiveFieldBlock(f, channels, norm) if rfb else conv_norm(f, channels, norm=norm, act="relu")
            for f in features
        )
        decoder = PartialDecoder if partial_decoder else ConcatDecoder
        self.decoder = decoder(channels, maps, norm)
        # Coarse to fine, as the code: (features, hidden, kernel, middle convs, head kernel).
        plans = [
            (features[2], 4 * width, 5, 3, 1),
            (features[1], width, 3, 2, 3),
            (features[0], width, 3, 2, 3),
        ]
        self.stages = nn.ModuleList(
            ReverseAttentionStage(
                f, hidden, maps, kernel_size=k, middle=m, head_kernel=h, norm=norm, reverse=reverse_attention
            )
            for f, hidden, k, m, h in plans
        )
        layout = RES2NET_V1B if backbone == "res2net" else torchvision_resnet("stages")
        shape = "Res2Net-50 v1b" if backbone == "res2net" else "ResNet-50"
        self.pretrained_backbone = Backbone(
            "backbone.", layout, f"a {shape} file needs width=64, blocks=(3, 4, 6, 3) and norm='batch'"
        )
        self.official_checkpoint = PRANET_OFFICIAL if backbone == "res2net" else None
        if backbone_weights is not None:
            load_backbone(self, backbone_weights, self.pretrained_backbone)

    def _logits(self, maps: torch.Tensor) -> torch.Tensor:
        """medattn logits from PraNet's maps: the maps themselves for one channel, else a zero background
        logit in front (softmax of [0, f] is sigmoid(f))."""
        if self.out_channels == 1:
            return maps
        return torch.cat([torch.zeros_like(maps[:, :1]), maps], dim=1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        f8, f16, f32 = self.backbone(x)
        r8, r16, r32 = (block(f) for block, f in zip(self.rfb, (f8, f16, f32), strict=True))
        maps = [self.decoder(r32, r16, r8)]
        for stage, features in zip(self.stages, (f32, f16, f8), strict=True):
            maps.append(stage(features, maps[-1]))
        size = x.shape[2:]
        if self.training and self.deep_supervision:
            return [self._logits(resize(m, size)) for m in reversed(maps)]
        return self._logits(resize(maps[-1], size))
