"""`medattn train`'s per-model training defaults: the papers' losses and PraNet's multi-scale training."""

from __future__ import annotations

import torch

from medattn.losses import DeepSupervisionLoss
from medattn.losses.ce_dice_focal import CEDiceFocalLoss
from medattn.losses.focal_region import FocalRegionLoss
from medattn.losses.structure import StructureLoss
from medattn.models import create, describe
from medattn.pipelines.train import training_loss, training_scales
from medattn.pipelines.train_options import TrainOptions
from medattn.training.multiscale import MULTI_SCALE_RATES


def _criterion(loss):
    return (loss.loss if isinstance(loss, DeepSupervisionLoss) else loss).criterion


def test_ratunet_trains_with_the_focal_region_loss_over_its_own_regions():
    network = create("ratunet", 2, 1, 2, **describe("ratunet").tiny)
    loss = training_loss(TrainOptions(model="ratunet"), network, 2, [], deep_supervision=True)
    assert isinstance(loss, DeepSupervisionLoss)
    criterion = _criterion(loss)
    assert isinstance(criterion, FocalRegionLoss) and criterion.region_source == network.loss_regions
    network(torch.rand(2, 1, 16, 16))
    assert criterion.region_source() is network.last_regions


def test_hbformer_trains_with_its_ce_dice_focal_loss_and_loss_overrides_it():
    network = create("hbformer", 2, 1, 3, **describe("hbformer").tiny)
    assert isinstance(
        _criterion(training_loss(TrainOptions(model="hbformer"), network, 3, [], False)), CEDiceFocalLoss
    )
    chosen = training_loss(TrainOptions(model="hbformer", loss="focal_region"), network, 3, [], False)
    assert isinstance(_criterion(chosen), FocalRegionLoss) and chosen.criterion.region_source is None
    pranet = create("pranet", 2, 3, 2, **describe("pranet").tiny)
    assert isinstance(
        _criterion(training_loss(TrainOptions(model="pranet"), pranet, 2, [], False)), StructureLoss
    )


def test_multi_scale_is_on_for_pranet_and_an_option_for_other_models():
    assert MULTI_SCALE_RATES == (0.75, 1.0, 1.25)
    assert training_scales(TrainOptions(model="pranet")) == MULTI_SCALE_RATES
    assert training_scales(TrainOptions(model="pranet", multi_scale=False)) == ()
    assert training_scales(TrainOptions(model="agunet")) == ()
    assert training_scales(TrainOptions(model="agunet", multi_scale=True)) == MULTI_SCALE_RATES
