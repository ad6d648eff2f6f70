"""Mixed precision on CUDA: bf16 and fp16 (with loss scaling) train, checkpoint and resume."""

from __future__ import annotations

import pytest
import torch
from training_data import augmented_dataset, loader, sphere_cases, tiny_unet

from medattn.losses import create_loss
from medattn.training import Trainer, TrainerConfig, create_optimizer, create_scheduler, load_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
EPOCHS, STEPS = 6, 3


def _validate_on_cuda(network: torch.nn.Module) -> dict[str, float]:
    case = sphere_cases(1, seed=9)[0]
    image = torch.from_numpy(case["image"][None]).cuda()
    label = torch.from_numpy(case["label"][None]).cuda() > 0
    predicted = network(image).argmax(1, keepdim=True) > 0
    total = (predicted.sum() + label.sum()).item()
    return {"val_dice": 2 * (predicted & label).sum().item() / total if total else 1.0}


def _trainer(out_dir, amp, epochs, resume_from=None):
    network = tiny_unet()
    optimizer = create_optimizer(network.parameters(), "adamw", lr=1e-2)
    return Trainer(
        network,
        create_loss("dice_ce", num_classes=2),
        optimizer,
        create_scheduler(optimizer, "poly", total_steps=EPOCHS * STEPS),
        config=TrainerConfig(out_dir=out_dir, device="cuda", amp=amp, epochs=epochs, resume_from=resume_from),
        validate_fn=_validate_on_cuda,
    )


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes(tmp_path, amp):
    dataset = augmented_dataset()
    first = _trainer(tmp_path, amp, epochs=3).fit(loader(dataset))
    state = load_checkpoint(first.last_checkpoint)
    assert (state["scaler"] is not None) == (amp == "fp16")  # fp16 saves its loss scale
    final = _trainer(tmp_path, amp, epochs=EPOCHS, resume_from=first.last_checkpoint).fit(loader(dataset))
    losses = torch.tensor([row["train_loss"] for row in final.history])
    assert final.epochs == EPOCHS and final.steps == EPOCHS * STEPS
    assert torch.isfinite(losses).all() and losses[-1] < losses[0]
    with torch.no_grad():
        untrained = _validate_on_cuda(tiny_unet().cuda().eval())["val_dice"]  # about 0.15
    assert final.best_metric > max(0.6, untrained + 0.3), (untrained, final.best_metric)
