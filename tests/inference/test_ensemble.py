"""Ensembles: probabilities averaged on the input grid, maps on the input grid, members checked."""

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from grids import ALIGNED_GRIDS, grid_affine
from tiny_package import make_package

import medattn
from medattn.errors import ConfigError
from medattn.inference.ensemble import Ensemble
from medattn.inference.uncertainty import mutual_information
from medattn.io import load_image
from medattn.package import package_members, read_config, save_ensemble, save_package


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ensemble")
    return [make_package(folder / f"fold_{k}", seed=k) for k in range(3)]


def _case(folder, affine, name="case.nii.gz"):
    rng = np.random.default_rng(3)
    image = (40 + 150 * (rng.random((18, 16, 10)) > 0.6) + rng.normal(0, 20, (18, 16, 10))).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), folder / name)
    return folder / name


def test_the_average_of_the_members_probabilities_makes_the_mask(members, tmp_path):
    image = load_image(_case(tmp_path, ALIGNED_GRIDS["RAS, anisotropic"]))
    singles = [
        medattn.load_model(m, device="cpu").predict_case(image, probabilities=True).probabilities
        for m in members
    ]
    by_hand = torch.stack([s.as_tensor() for s in singles]).mean(0)
    ensemble = Ensemble(members, device="cpu")
    prepared = ensemble.preprocess(image)
    output = ensemble.finish(ensemble.infer(prepared), prepared, image, probabilities=True, uncertainty=True)
    np.testing.assert_allclose(output.probabilities.numpy(), by_hand.numpy(), atol=1e-6)
    np.testing.assert_array_equal(output.mask[0].numpy(), by_hand.argmax(0).numpy())
    assert output.disagreement.shape == output.uncertainty.shape == (1, *image.shape[1:])
    assert float(output.disagreement.max()) > 0  # members with other weights disagree somewhere
    assert float((output.disagreement - output.uncertainty).max()) <= 1e-6  # a part of the whole


@pytest.mark.parametrize(
    "affine",
    [
        ALIGNED_GRIDS["LPS (DICOM)"],
        ALIGNED_GRIDS["axes permuted and flipped"],
        grid_affine((0, 1, 2), (1, 1, 1), (1.0, 1.2, 2.0), (5, -5, 10), rotation_deg=20),
    ],
    ids=["LPS", "permuted", "oblique"],
)
def test_maps_land_on_the_input_grid(members, tmp_path, affine):
    scan = _case(tmp_path / "in", affine)
    results = medattn.predict(scan.parent, tmp_path / "out", members[:2], device="cpu", uncertainty=True)
    assert [r.status for r in results] == ["done"]
    source = nib.load(scan)
    for name in ("case.nii.gz", "case_uncertainty.nii.gz", "case_disagreement.nii.gz"):
        written = nib.load(tmp_path / "out" / name)
        assert written.shape == source.shape and np.allclose(written.affine, source.affine, atol=1e-4)
    values = np.asarray(nib.load(tmp_path / "out" / "case_uncertainty.nii.gz").dataobj)
    assert values.dtype == np.float32 and values.min() >= 0 and values.max() <= 1
    report = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert report["members"] == [str(m) for m in members[:2]]
    assert 0 <= report["cases"][0]["mean_uncertainty"] <= 1
    header = (tmp_path / "out" / "components.csv").read_text().splitlines()[0]
    assert header == (
        "case,label,name,component,volume_ml,centroid_x,centroid_y,centroid_z,mean_probability,"
        "mean_uncertainty,confidence,low_confidence"
    )


def test_tta_passes_are_members_of_one_model_and_of_an_ensemble(members, tmp_path):
    """With --tta the mirrored passes disagree like members do: one model gets a disagreement map, and an
    ensemble's counts every member's passes (the mean of their entropies is below the single passes')."""
    scan = _case(tmp_path / "in", ALIGNED_GRIDS["RAS, anisotropic"])
    plain = medattn.predict(scan, tmp_path / "plain", members[0], device="cpu", uncertainty=True)
    assert [r.status for r in plain] == ["done"]
    assert not (tmp_path / "plain" / "case_disagreement.nii.gz").exists()  # one pass, one member

    def maps(out, model, tta):
        medattn.predict(scan, tmp_path / out, model, device="cpu", uncertainty=True, tta=tta)
        return [
            np.asarray(nib.load(tmp_path / out / f"case_{name}.nii.gz").dataobj)
            for name in ("uncertainty", "disagreement")
        ]

    uncertainty, disagreement = maps("tta", members[0], tta=True)
    assert disagreement.dtype == np.float32 and disagreement.min() >= 0 and disagreement.max() > 0
    assert (disagreement <= uncertainty + 1e-6).all()  # the members' part of the total uncertainty
    image = load_image(scan)
    probabilities, pass_entropies = [], []
    for member in members[:2]:
        predictor = medattn.load_model(member, device="cpu", tta=True)
        prepared = predictor.preprocess(image)
        inferred = predictor.infer(prepared, uncertainty=True)
        probabilities.append(predictor.finish(inferred, prepared, image, probabilities=True).probabilities)
        pass_entropies.append(predictor.pass_entropy_on_input(inferred, prepared, image))
    mean = torch.stack([p.as_tensor() for p in probabilities]).mean(0)
    by_hand = mutual_information(mean, torch.stack(pass_entropies).mean(0))
    _, ensemble = maps("folds_tta", members[:2], tta=True)
    np.testing.assert_allclose(ensemble, by_hand.numpy(), atol=1e-5)


def test_an_ensemble_package_and_folds_pick_its_members(members, tmp_path):
    root = members[0].parent
    save_ensemble(root, members, folds=3)
    assert package_members(root) == members
    assert package_members(root, folds=[0, 2]) == [members[0], members[2]]
    with pytest.raises(ConfigError, match=r"members \[0, 1, 2\]"):
        package_members(root, folds=[3])
    with pytest.raises(ConfigError, match="single model"):
        package_members(members[0], folds=[0])
    save_ensemble(root, members[1:], folds=3)  # fold 0 still training: --folds names folds, not positions
    assert package_members(root, folds=[2]) == [members[2]]


def test_members_that_do_not_fit_together_are_refused_before_any_case(members, tmp_path):
    config = read_config(members[0])
    other = dataclasses.replace(
        config, plan=dataclasses.replace(config.plan, labels={0: "bg", 1: "a", 2: "b"})
    )
    odd = save_package(tmp_path / "odd", torch.load(members[0] / "model.pt", weights_only=True), other)
    with pytest.raises(ConfigError, match="agree on labels") as caught:
        Ensemble([members[0], odd], device="cpu")
    assert str(odd) in str(caught.value)
    missing = tmp_path / "ensemble"
    save_ensemble(missing, [members[0], tmp_path / "gone"])
    with pytest.raises(medattn.MedattnError, match="gone"):
        medattn.predict(tmp_path, tmp_path / "out", missing, device="cpu")
