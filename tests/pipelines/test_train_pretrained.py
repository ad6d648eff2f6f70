"""Training from a pretrained backbone file: the package holds its weights; predict never needs the file."""

from __future__ import annotations

import json

import torch
from tiny_package import TINY_TRAINING, write_sphere_dataset

import medattn
from medattn.models import create, describe


def test_a_package_trained_from_backbone_weights_predicts_without_the_file(tmp_path):
    data = write_sphere_dataset(tmp_path / "Dataset002_Sphere", cases=3)
    tiny = dict(describe("hbformer").tiny)
    pretrained = create("hbformer", 3, 1, 2, **tiny)
    with torch.no_grad():
        for parameter in pretrained.encoder.parameters():
            parameter.normal_()
    weights = tmp_path / "hbformer.pt"
    torch.save(pretrained.state_dict(), weights)  # a medattn model.pt serves as backbone_weights too
    options = {**TINY_TRAINING, "model": "hbformer", "steps_per_epoch": 1}
    options["model_kwargs"] = {**tiny, "backbone_weights": str(weights)}
    run = medattn.train(data, out=tmp_path / "run", epochs=1, **options)

    config = json.loads((run.package / "medattn.json").read_text())
    assert "backbone_weights" not in config["model_kwargs"]
    weights.unlink()
    predictor = medattn.load_model(run.package, device="cpu")
    image = medattn.io.load_image(sorted((data / "imagesTr").iterdir())[0])
    assert tuple(predictor.predict(image).shape) == (1, *image.shape[1:])
