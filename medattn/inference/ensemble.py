"""`Ensemble`: several model packages predicting as one, their class probabilities averaged.

As nnU-Net ensembles its folds, the members' softmax probabilities are averaged before the argmax; here
the average is taken on the input grid, so members trained with other spacings or patch sizes (separate
packages that share labels, dimensions and input channels) ensemble too. Members run one after another
and the average accumulates as each finishes: beyond a single model's run, an ensemble holds one more
member's network and one running sum of probabilities (plus one of entropies for the disagreement map),
whatever the number of members. The first member stays loaded between cases; the others are loaded for
each case (a package's weights read in well under a second).

An `Ensemble` offers the `Predictor` stages (`preprocess`, `infer`, `finish`), so every case runs through
the same stage list (`medattn.inference.stages`) as a single model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from monai.data import MetaTensor

from medattn.errors import ConfigError
from medattn.inference.predictor import PredictionOutput, Predictor, load_model, mask_meta, uncertainty_maps
from medattn.inference.resample import labels_from_probabilities
from medattn.inference.uncertainty import entropy
from medattn.package import read_config


@dataclass
class _Averaged:
    """The members' averaged probabilities on the input grid, their mean entropy, and how many they were."""

    probabilities: torch.Tensor  # (C, *input grid)
    member_entropy: torch.Tensor  # (*input grid), nats
    members: int


class Ensemble:
    """Model packages whose averaged probabilities make the mask.

    Args:
        members: model package folders (at least two; see `medattn.package.package_members`).
        **settings: `Predictor` settings every member runs with (device, amp, overlap, tta, ...).

    Raises:
        ConfigError: a member with other labels, spatial dimensions or input channels than the first (named),
            or a setting ensembles do not take (--compile, an engine other than torch).
    """

    def __init__(self, members: list[str | Path], **settings):
        self.members = [Path(m) for m in members]
        if settings.get("compile"):
            raise ConfigError("--compile compiles one network; an ensemble loads its members case by case")
        configs = [read_config(member) for member in self.members]
        first = configs[0]
        for member, config in zip(self.members[1:], configs[1:], strict=True):
            for what, mine, theirs in (
                ("labels", first.labels, config.labels),
                ("spatial dimensions", first.plan.spatial_dims, config.plan.spatial_dims),
                ("input channels", first.plan.in_channels, config.plan.in_channels),
            ):
                if mine != theirs:
                    raise ConfigError(
                        f"ensemble members must agree on {what}: {self.members[0]} has {mine}, "
                        f"this one {theirs}",
                        member,
                    )
        self.settings = settings
        self._first: Predictor = load_model(self.members[0], **settings)
        self.config = self._first.config
        self.device = self._first.device
        self.amp_dtype = self._first.amp_dtype
        self.lesion_threshold = self._first.lesion_threshold

    @property
    def plan(self):
        return self.config.plan

    @property
    def accepts_prompts(self) -> bool:
        return self._first.accepts_prompts

    @property
    def input_spatial_dims(self) -> int | None:
        return self._first.input_spatial_dims

    def _member(self, index: int) -> Predictor:
        return self._first if index == 0 else load_model(self.members[index], **self.settings)

    def preprocess(self, image: MetaTensor, prompts=None) -> tuple[MetaTensor, object]:
        """The image as it is: each member preprocesses it its own way inside `infer`."""
        self._first.check(image)
        return image, prompts

    def infer(self, prepared, attention: bool = False, uncertainty: bool = False) -> _Averaged:
        """Every member's probabilities on the input grid, averaged as they finish, with the members' mean
        entropy (for the disagreement map; with `uncertainty` under TTA each member's passes count as
        members)."""
        if attention:
            raise ConfigError("--save-attention shows one network's attention; an ensemble has several")
        image, prompts = prepared
        total = member_entropy = None
        for index in range(len(self.members)):
            member = self._member(index)
            member_input = member.preprocess(image, prompts)
            inferred = member.infer(member_input, uncertainty=uncertainty)
            output = member.finish(inferred, member_input, image, probabilities=True)
            probabilities = output.probabilities.as_tensor().float()
            # Under TTA a member's mirrored passes are members too: their mean entropy stands for its own.
            passes = member.pass_entropy_on_input(inferred, member_input, image)
            entropy_of_member = entropy(probabilities) if passes is None else passes.float()
            del output, member_input, inferred, passes
            if total is None:
                total, member_entropy = probabilities.clone(), entropy_of_member
            else:
                total += probabilities
                member_entropy += entropy_of_member
            del probabilities, entropy_of_member
        count = len(self.members)
        return _Averaged(total / count, member_entropy / count, count)

    def finish(
        self,
        inferred: _Averaged,
        prepared,
        image: MetaTensor,
        probabilities: bool = False,
        uncertainty: bool = False,
    ) -> PredictionOutput:
        """The mask from the averaged probabilities (lesion threshold as a single model applies it), with
        the probabilities and the uncertainty and disagreement maps when asked."""
        mean = inferred.probabilities
        labels = labels_from_probabilities(mean, self._first.thresholded_lesions(), self.lesion_threshold)
        output = PredictionOutput(
            mask=MetaTensor(labels[None], affine=image.affine, meta=mask_meta(image)),
            probabilities=MetaTensor(mean, affine=image.affine) if probabilities or uncertainty else None,
        )
        if uncertainty:
            output.uncertainty, output.disagreement = uncertainty_maps(mean, inferred.member_entropy, image)
        return output


def load_predictor(packages: list[str | Path], **settings) -> Predictor | Ensemble:
    """One package as a `Predictor`, several as an `Ensemble` (settings as `Predictor`'s)."""
    if len(packages) == 1:
        return load_model(packages[0], **settings)
    return Ensemble(packages, **settings)
