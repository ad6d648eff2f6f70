"""Validation during training: the `validate_fn` a Trainer calls with its network after an epoch.

Sliding-window Dice per label and lesion-wise recall by volume stratum; for prompted models (the SAM
family), Dice with box prompts from the reference masks. Both run on the preprocessed validation volumes
(cached once), so each epoch costs only inference. Lesion recall by size is reported every epoch because
small lesions are what attention U-Nets miss (the meningioma paper's misses were under 3 mL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from medattn.metrics.lesions import STRATA, match_lesions
from medattn.metrics.overlap import dice
from medattn.metrics.volume import voxel_volume_ml
from medattn.plan import Plan


def make_validate_fn(
    cases: Sequence[dict],
    plan: Plan,
    lesion_values: Sequence[int],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    overlap: float = 0.25,
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """A function the trainer calls with its network; returns mean Dice per label and lesion recall.

    Args:
        cases: preprocessed validation items ({"image": MetaTensor, "label": MetaTensor}).
        plan: the run's plan (patch size, labels).
        lesion_values: labels scored lesion-wise.
        device: where windows run.
        amp_dtype: autocast dtype on CUDA, None on CPU.
        overlap: sliding-window overlap for validation (lower than prediction's, for speed).
    """
    from medattn.inference import sliding_window_predict
    from medattn.inference.fuse import fuse_for_inference

    def validate(network: torch.nn.Module) -> dict[str, float]:
        # An eval copy with batch norms folded: a fifth less forward time, and the training network's
        # modules and memory format are left as they are.
        network = fuse_for_inference(network)
        per_label: dict[int, list[float]] = {v: [] for v in range(1, plan.num_classes)}
        found = {name: [0, 0] for name, _, _ in STRATA}  # stratum -> [detected, total]
        for item in cases:
            probabilities = sliding_window_predict(
                network,
                item["image"].as_tensor(),
                plan.patch_size,
                overlap=overlap,
                sw_batch_size=2,
                amp_dtype=amp_dtype,
                device=device,
                stitch_device=torch.device("cpu"),
            )
            predicted = probabilities.argmax(0).numpy()
            reference = np.asarray(item["label"][0]).astype(np.int64)
            for value in per_label:
                if (reference == value).any() or (predicted == value).any():
                    per_label[value].append(dice(predicted == value, reference == value))
            voxel_ml = voxel_volume_ml(np.asarray(item["image"].affine), plan.spatial_dims)
            for value in lesion_values:
                for lesion in match_lesions(predicted == value, reference == value, voxel_ml):
                    if lesion.source == "ref":
                        found[lesion.stratum][1] += 1
                        found[lesion.stratum][0] += lesion.status == "TP"
        metrics = _dice_scores(per_label, plan)
        for stratum, (detected, total) in found.items():
            if total:
                metrics[f"lesion_recall_{stratum}ml"] = detected / total
        return metrics

    return validate


def make_prompted_validate_fn(
    cases: Sequence[dict], plan: Plan, *, device: torch.device, amp_dtype: torch.dtype | None = None
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """Validation for prompted models (the SAM family): mean Dice per label, each image segmented with box
    prompts from its reference mask (one per component, per slice in 3D), as MedSAM is evaluated.

    A box-trained model scored in SAM's no-prompt mode would pick its best checkpoint by a task it never
    trained for; this scores the one it is used for.

    Args:
        cases: preprocessed validation items ({"image": MetaTensor, "label": MetaTensor}).
        plan: the run's plan (patch size = the model's input size, labels).
        device: where the network runs.
        amp_dtype: autocast dtype on CUDA, None on CPU.
    """
    from medattn.inference.prompted import (
        ImagePrompts,
        SliceSegmenter,
        predict_prompted,
        prompted_input_size,
        resizer,
    )

    def validate(network: torch.nn.Module) -> dict[str, float]:
        was_training = network.training
        network.eval()
        segmenter = SliceSegmenter(network, resizer(prompted_input_size(network, plan)), device, amp_dtype)
        per_label: dict[int, list[float]] = {v: [] for v in range(1, plan.num_classes)}
        for item in cases:
            reference = np.asarray(item["label"][0]).astype(np.int64)
            prompts = ImagePrompts.from_label_map(reference)
            probabilities, _ = predict_prompted(item["image"].as_tensor(), prompts, segmenter)
            predicted = probabilities.argmax(0).numpy()
            for value in per_label:
                if (reference == value).any() or (predicted == value).any():
                    per_label[value].append(dice(predicted == value, reference == value))
        network.train(was_training)
        return _dice_scores(per_label, plan)

    return validate


def _dice_scores(per_label: dict[int, list[float]], plan: Plan) -> dict[str, float]:
    """``val_dice`` (the mean over labels scored) and ``val_dice_<label name>`` (the mean over cases)."""
    scores = {f"val_dice_{plan.labels.get(v, v)}": float(np.mean(s)) for v, s in per_label.items() if s}
    return {"val_dice": float(np.mean(list(scores.values()))) if scores else 0.0, **scores}
