"""A tiny AGUNet learns to segment noisy spheres on CPU in seconds; MONAI's Dice scores it on unseen ones."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric

from medattn.models import create


def noisy_spheres(count: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, label), each (count, 1, size^3): one bright sphere per sample, Gaussian noise sd 0.35."""
    axes = torch.arange(size, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"))
    labels = []
    for _ in range(count):
        centre = size * (0.3 + 0.4 * torch.rand(3, 1, 1, 1, generator=generator))
        radius = size * (0.15 + 0.15 * torch.rand(1, generator=generator))
        labels.append((((grid - centre) ** 2).sum(dim=0) <= radius**2).float())
    label = torch.stack(labels).unsqueeze(1)
    image = label + 0.35 * torch.randn(label.shape, generator=generator)
    return image, label


def test_tiny_agunet_learns_spheres():
    generator = torch.Generator().manual_seed(0)
    train_image, train_label = noisy_spheres(4, 16, generator)
    test_image, test_label = noisy_spheres(4, 16, generator)
    model = create("agunet", 3, 1, 2, base_channels=4, depth=2, deep_supervision=False)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        loss_function(model(train_image), train_label).backward()
        optimizer.step()

    model.eval()
    with torch.no_grad():
        prediction = model(test_image).argmax(dim=1, keepdim=True).float()
    dice = DiceMetric(include_background=False)(prediction, test_label)
    assert dice.mean() > 0.9, f"Dice on unseen spheres {dice.flatten().tolist()}"
