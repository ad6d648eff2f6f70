"""Patch sampling: the share of patches centred on each class, lesions first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from medattn.plan import Plan
from medattn.transforms.presets import augmentation, class_ratios


def test_class_ratios_give_lesions_their_share_and_split_the_rest_evenly():
    assert class_ratios(4, [3], 0.5) == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert class_ratios(5, [3, 4], 0.6) == pytest.approx([0.4 / 3] * 3 + [0.3, 0.3])
    assert class_ratios(4, [3], None) == [1.0] * 4  # every class as often
    assert class_ratios(2, [1], 0.5) == pytest.approx([0.5, 0.5])
    assert class_ratios(3, [], 0.5) == [1.0] * 3  # no lesion label: nothing to favour


def test_half_of_the_training_patches_are_centred_on_a_lesion():
    """On a volume where the lesion is 8 of 260 000 voxels, half of the crops hold it."""
    label = np.zeros((64, 64, 64), np.uint8)
    label[8:56, 8:32, 8:56] = 1
    label[8:56, 32:56, 8:56] = 2
    label[20:22, 20:22, 20:22] = 3
    plan = Plan(3, 1, 4, [1.0, 1.0, 1.0], [8, 8, 8], 2, "mr", labels={3: "lesion"})
    chain = Compose(augmentation(plan, seed=0, lesion_values=[3], lesion_share=0.5)[:4])
    chain.set_random_state(seed=1)
    item = {"image": torch.zeros(1, 64, 64, 64), "label": torch.from_numpy(label[None])}
    hits = sum(bool((chain(dict(item))[0]["label"] == 3).any()) for _ in range(400))
    assert 0.42 < hits / 400 < 0.6  # without the share: a quarter (one class in four)
