"""Prompted prediction with the SAM family: prompts parse and land where the user means them, volumes go slice
by slice with the box carried, non-SAM packages refuse prompts in one line, `train --model sam_adapter` runs.

Where a test must know what a correct mask is, the tiny network's forward is replaced by an oracle that
segments the bright pixels inside the prompt box (all bright pixels without one), so the test checks the
pipeline around the network: intensity, resizing, layout, box scaling, slice propagation, the output grid.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_package import make_ct_case, make_package

import medattn
from medattn.cli.main import main
from medattn.errors import ConfigError, GeometryError
from medattn.inference.predictor import load_model
from medattn.inference.prompted import (
    SliceSegmenter,
    propagate,
    resizer,
)
from medattn.models import create
from medattn.models.sam import SAM
from medattn.models.sam.adapter import SAMAdapter
from medattn.models.sam.preprocess import medsam_preprocess
from medattn.models.sam.prompts import ImagePrompts, parse_box, parse_point
from medattn.package import PackageConfig, save_package
from medattn.plan import Plan

SIZE = 48  # the package's input size (patch), a multiple of 16
THRESHOLD = 1.0  # the oracle's "bright": > 1 standard deviation above the mean of non-zero pixels ("mr")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A tiny grey-scale sam_adapter package with random weights everywhere."""
    torch.manual_seed(0)
    network = create("sam_adapter", 2, 1, 2, variant="tiny")
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.5)
    plan = Plan(
        spatial_dims=2,
        in_channels=1,
        num_classes=2,
        spacing=None,
        patch_size=[SIZE, SIZE],
        batch_size=2,
        preset="mr",
        labels={0: "background", 1: "lesion"},
    )
    config = PackageConfig(model="sam_adapter", model_kwargs={"variant": "tiny"}, plan=plan)
    return save_package(tmp_path_factory.mktemp("sam_package"), network.state_dict(), config)


def _oracle(self, x):
    """Bright pixels inside the prompt box (x along the last axis of SAM's layout), all without a box."""
    bright = x[:, :1] > THRESHOLD
    if self._prompts.boxes is not None:
        rows = torch.arange(x.shape[2]).view(1, 1, -1, 1)
        cols = torch.arange(x.shape[3]).view(1, 1, 1, -1)
        x0, y0, x1, y1 = (self._prompts.boxes[:, i].view(-1, 1, 1, 1) for i in range(4))
        bright &= (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
    logit = torch.where(bright, 10.0, -10.0)
    return torch.cat([torch.zeros_like(logit), logit], dim=1)


@pytest.fixture
def oracle(monkeypatch):
    monkeypatch.setattr(SAMAdapter, "_forward", _oracle)


def _disk(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def _png(path, rows_first: np.ndarray) -> None:
    Image.fromarray(rows_first.astype(np.uint8)).save(path)


@pytest.fixture
def two_disks(tmp_path):
    """A 48 x 32 (columns x rows) grey PNG: disk A at column 12, row 10; disk B at column 34, row 22."""
    rows_first = np.random.default_rng(0).integers(10, 30, (32, 48))
    disk_a, disk_b = _disk((32, 48), (10, 12), 5), _disk((32, 48), (22, 34), 5)
    rows_first[disk_a | disk_b] = 200
    folder = tmp_path / "png"
    folder.mkdir()
    _png(folder / "frame.png", rows_first)
    return folder / "frame.png", disk_a, disk_b


def _dice(a, b) -> float:
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_boxes_and_points_parse_from_text_and_numbers():
    assert parse_box("30, 4,10,20") == (10.0, 4.0, 30.0, 20.0)  # corners in any order
    assert parse_point("3,4") == (3.0, 4.0, 1) and parse_point((3, 4, 0)) == (3.0, 4.0, 0)
    prompts = ImagePrompts.build(box=(1, 2, 3, 4), points=["5,6", (7, 8, 0)], slice_index=3)
    assert prompts.boxes == [(1.0, 2.0, 3.0, 4.0)] and prompts.points == [(5.0, 6.0, 1), (7.0, 8.0, 0)]
    assert ImagePrompts.build(box=["1,2,3,4", [5, 6, 7, 8]]).boxes[1] == (5.0, 6.0, 7.0, 8.0)
    for bad, message in [("1,2,3", "x0,y0,x1,y1"), ("a,b,c,d", "x0,y0,x1,y1")]:
        with pytest.raises(ConfigError, match=message):
            parse_box(bad)
    with pytest.raises(ConfigError, match="label is 1"):
        parse_point("1,2,5")


def test_points_and_boxes_reach_sam_in_medsams_coordinates_on_a_non_square_image():
    """MedSAM_Inference.py: box_1024 = box / [W, H, W, H] * 1024 (W columns, H rows); here img_size 64.
    The image SAM's encoder sees must have the clicked pixel at the same place."""
    width, height, img_size = 40, 24, 64
    rows_first = np.zeros((height, width), np.float32)
    rows_first[6, 30] = 1.0  # the pixel at x = 30 (column), y = 6 (row)
    image = torch.from_numpy(rows_first.T.copy())[None]  # medattn's (1, W, H), as PILReader reads a PNG
    model = create("sam", 2, 1, 2, variant="tiny").eval()
    seen = {}
    model.prompt_encoder.register_forward_pre_hook(lambda _, args: seen.update(prompts=args))
    model.image_encoder.register_forward_pre_hook(lambda _, args: seen.update(image=args[0]))
    prompts = ImagePrompts.build(box="28,4,33,9", points="30,6")
    SliceSegmenter(model, resizer((img_size, img_size)), torch.device("cpu"))(
        image, prompts.boxes, prompts.points
    )
    (coords, labels), boxes, _ = seen["prompts"]
    scale = np.array([width, height]) / img_size
    torch.testing.assert_close(
        coords[0], torch.tensor([[30.0, 6.0]]) / torch.tensor(scale, dtype=torch.float32)
    )
    assert labels.tolist() == [[1]]
    expected_box = np.array([28.0, 4.0, 33.0, 9.0]) / np.array([width, height, width, height]) * img_size
    torch.testing.assert_close(boxes[0], torch.tensor(expected_box, dtype=torch.float32))
    row, col = np.unravel_index(int(seen["image"][0, 0].argmax()), (img_size, img_size))
    assert abs(col - 30 / scale[0]) <= 1 and abs(row - 6 / scale[1]) <= 1  # SAM's (H, W): x is the column


def test_a_medsam_package_feeds_sam_medsams_preprocessing_of_the_image(tmp_path):
    """plan.preset "medsam": SAM's encoder sees exactly MedSAM's preprocessing of the image as MedSAM reads it
    (rows first, (3, H, W)), though medattn holds it as (3, W, H)."""
    rows_first = np.random.default_rng(2).integers(0, 256, (24, 40, 3))
    _png(tmp_path / "rgb.png", rows_first)
    network = create("sam", 2, 3, 2, variant="tiny")
    plan = Plan(2, 3, 2, None, [64, 64], 1, "medsam", labels={0: "background", 1: "object"})
    package = save_package(
        tmp_path / "medsam", network.state_dict(), PackageConfig("sam", {"variant": "tiny"}, plan)
    )
    predictor = load_model(package, device="cpu")
    seen = {}
    predictor.network.image_encoder.register_forward_pre_hook(lambda _, args: seen.update(image=args[0]))
    mask = predictor.predict(tmp_path / "rgb.png", box="2,2,30,20")
    expected = medsam_preprocess(torch.from_numpy(rows_first).permute(2, 0, 1).float(), "rgb", img_size=64)
    torch.testing.assert_close(seen["image"][0], expected, rtol=0, atol=1e-5)
    assert mask.shape == (1, 40, 24)


def test_a_box_prompt_changes_the_prediction_of_the_real_network(package, two_disks):
    predictor = load_model(package, device="cpu")
    image = predictor.load(two_disks[0])
    plain = predictor.predict_case(image, probabilities=True)
    boxed = predictor.predict_case(image, probabilities=True, prompts=ImagePrompts.build(box="5,3,19,17"))
    assert plain.mask.shape == boxed.mask.shape == (1, 48, 32)
    assert not torch.allclose(plain.probabilities, boxed.probabilities, atol=1e-3)
    assert torch.equal(predictor.predict(image, box="5,3,19,17"), boxed.mask)


def test_box_on_a_png_segments_the_object_inside_it(package, two_disks, oracle, tmp_path):
    path, disk_a, disk_b = two_disks
    # x = column, y = row, as an image viewer shows them: disk A is at columns 7-17, rows 5-15.
    medattn.predict(path, tmp_path / "boxed", package, box="5,3,19,17", format="png", device="cpu")
    medattn.predict(path, tmp_path / "plain", package, format="png", device="cpu")
    boxed = np.asarray(Image.open(tmp_path / "boxed" / "frame.png")) > 0
    plain = np.asarray(Image.open(tmp_path / "plain" / "frame.png")) > 0
    assert boxed.shape == disk_a.shape
    assert _dice(boxed, disk_a) > 0.9 and not boxed[disk_b].any()
    assert _dice(plain, disk_a | disk_b) > 0.9  # no prompt: SAM's no-prompt mode (the oracle: everything)
    report = json.loads((tmp_path / "boxed" / "predict.json").read_text())
    assert report["options"]["box"] == "5,3,19,17" and report["cases"][0]["status"] == "done"


def test_prior_mask_and_box_model_give_one_box_per_component(package, two_disks, oracle, tmp_path):
    path, disk_a, disk_b = two_disks
    prior = np.zeros((32, 48), np.uint8)
    prior[8:13, 10:15] = 1  # a rough square inside disk A
    _png(tmp_path / "prior.png", prior)
    medattn.predict(path, tmp_path / "prior", package, prior_mask=tmp_path / "prior.png", format="png")
    from_prior = np.asarray(Image.open(tmp_path / "prior" / "frame.png")) > 0
    assert not from_prior[disk_b].any() and from_prior[disk_a].mean() > 0.3  # bright pixels in A's box
    # The package itself as the coarse model: its no-prompt mask has both disks, so both get a box.
    medattn.predict(path, tmp_path / "auto", package, box_model=package, format="png")
    automatic = np.asarray(Image.open(tmp_path / "auto" / "frame.png")) > 0
    assert _dice(automatic, disk_a | disk_b) > 0.9
    with pytest.raises(ConfigError, match="give prompts one way"):
        medattn.predict(path, tmp_path / "x", package, box="1,1,5,5", box_model=package)
    _png(tmp_path / "small.png", prior[:16])
    results = medattn.predict(path, tmp_path / "bad", package, prior_mask=tmp_path / "small.png")
    assert results[0].status == "failed" and "input's grid" in results[0].error


def _moving_blob_volume(folder):
    """(40, 36, 12) volume: blob A (radius 5) on slices 2-9 moving +2 px in x per slice; blob B elsewhere."""
    shape = (40, 36)
    volume = np.random.default_rng(1).uniform(10, 30, (*shape, 12)).astype(np.float32)
    blob_a = np.zeros((*shape, 12), bool)
    for k in range(2, 10):
        blob_a[..., k] = _disk(shape, (10 + 2 * (k - 2), 18), 5)
    blob_b = np.zeros_like(blob_a)
    blob_b[..., :] = _disk(shape, (36, 3), 2)[..., None]
    volume[blob_a | blob_b] = 200
    path = folder / "volume.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    return path, blob_a, blob_b


def test_a_volume_is_segmented_slice_by_slice_with_the_box_carried(package, oracle, tmp_path):
    path, blob_a, blob_b = _moving_blob_volume(tmp_path)
    box_on_5 = "10,12,22,24"  # blob A on slice 5: centre x 16, y 18, radius 5
    medattn.predict(path, tmp_path / "out", package, box=box_on_5, slice_index=5, device="cpu")
    result = nib.load(tmp_path / "out" / "volume.nii.gz")
    mask = np.asarray(result.dataobj) > 0
    assert mask.shape == blob_a.shape and np.allclose(result.affine, np.diag([0.8, 0.8, 2.5, 1.0]))
    # Slice 9's blob moved 8 px beyond slice 5's box: only the carried box finds it whole; blob B, which
    # the oracle would segment without a box, never appears; slices beyond blob A stay empty.
    for k in range(2, 10):
        assert _dice(mask[..., k], blob_a[..., k]) > 0.9, k
    assert not mask[blob_b].any() and not mask[..., [0, 1, 10, 11]].any()
    # A prior mask on two slices seeds those slices; propagation reaches the rest of blob A.
    prior = np.zeros(blob_a.shape, np.uint8)
    prior[..., 4:6] = blob_a[..., 4:6]
    nib.save(nib.Nifti1Image(prior, np.diag([0.8, 0.8, 2.5, 1.0])), tmp_path / "prior.nii.gz")
    medattn.predict(path, tmp_path / "prior", package, prior_mask=tmp_path / "prior.nii.gz")
    from_prior = np.asarray(nib.load(tmp_path / "prior" / "volume.nii.gz").dataobj) > 0
    assert _dice(from_prior, blob_a) > 0.9 and not from_prior[blob_b].any()
    with pytest.raises(ConfigError, match="--slice K"):
        load_model(package, device="cpu").predict(path, box=box_on_5)


def _fake_segmenter(objects: np.ndarray, calls: list[int]):
    """segment(k, boxes): the pixels of `objects[..., k]` inside each box (all of them without a box), as
    one-hot probabilities."""

    def segment(index: int, boxes):
        calls.append(index)
        found = []
        boxes = boxes or [(0, 0, objects.shape[0], objects.shape[1])]
        for x0, y0, x1, y1 in boxes:
            inside = np.zeros(objects.shape[:2], bool)
            inside[int(x0) : int(x1) + 1, int(y0) : int(y1) + 1] = True
            foreground = torch.from_numpy(objects[..., index] & inside).float()
            found.append(torch.stack([1 - foreground, foreground]))
        return torch.stack(found)

    return segment


def test_propagation_follows_each_object_until_its_mask_vanishes():
    shape, depth = (40, 30), 10
    objects = np.zeros((*shape, depth), bool)
    for k in range(2, 8):  # object 1: slices 2-7, moving +3 px in x per slice
        objects[..., k] |= _disk(shape, (8 + 3 * (k - 2), 10), 4)
    for k in range(4, 6):  # object 2: slices 4-5, still
        objects[..., k] |= _disk(shape, (30, 24), 3)
    seeds = {4: [(10.0, 6.0, 18.0, 14.0), (27.0, 21.0, 33.0, 27.0)]}
    calls: list[int] = []
    visited = propagate(_fake_segmenter(objects, calls), depth, seeds, margin=4)
    assert sorted(visited) == list(range(1, 9))  # each direction stops one slice past the object
    assert 0 not in calls and 9 not in calls
    for k in range(depth):
        found = (visited[k].argmax(1) > 0).any(0).numpy() if k in visited else np.zeros(shape, bool)
        assert np.array_equal(found, objects[..., k]), k
    assert visited[6].shape[0] == 2 and visited[7].shape[0] == 1  # object 2's mask vanished on slice 6
    # Without a margin the carried box cannot keep up with the moving object.
    narrow = propagate(_fake_segmenter(objects, []), depth, seeds, margin=0)
    assert (narrow[7].argmax(1) > 0).sum() < objects[..., 7].sum()
    # Propagation stops at another seeded slice, which keeps its own boxes.
    both = propagate(_fake_segmenter(objects, calls := []), depth, {2: [(4.0, 6.0, 12.0, 14.0)], 5: []}, 4)
    assert calls.count(5) == 1 and calls.count(3) == 2 and 4 in both  # 3 and 4 reached from both sides
    with pytest.raises(GeometryError, match="outside the volume"):
        propagate(_fake_segmenter(objects, []), depth, {12: []})


def test_prompts_for_a_non_sam_package_are_a_one_line_error(tmp_path, capsys):
    package = make_package(tmp_path / "agunet")
    image = make_ct_case(tmp_path / "in")
    code = main(["predict", str(image), str(tmp_path / "out"), "--model", str(package), "--box", "1,2,8,9"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert code == 1 and len(errors) == 1  # one line, no traceback (the other line is the progress bar)
    assert errors[0].startswith("error: model 'agunet' takes no prompts") and "SAM family" in errors[0]
    with pytest.raises(ConfigError, match="takes no prompts"):
        load_model(package, device="cpu").predict(image, box=(1, 2, 8, 9))


@pytest.fixture
def rgb_folder(tmp_path):
    """images/ + labels/ with three 32 x 32 RGB frames of a bright disk, the layout `medattn train` takes."""
    rng = np.random.default_rng(0)
    for folder in ("images", "labels"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for index in range(3):
        disk = _disk((32, 32), (14, 12 + 3 * index), 6)
        rgb = rng.integers(0, 60, (32, 32, 3)) + 150 * disk[..., None]
        _png(tmp_path / "data" / "images" / f"f{index}.png", rgb)
        _png(tmp_path / "data" / "labels" / f"f{index}.png", disk)
    return tmp_path / "data"


def test_train_sam_adapter_from_a_local_checkpoint_with_box_prompts_then_predict(
    rgb_folder, tmp_path, monkeypatch
):
    sam = create("sam", 2, 3, 1, variant="tiny")
    checkpoint = {key: torch.randn_like(value) for key, value in sam.state_dict().items()}
    torch.save(checkpoint, tmp_path / "sam_tiny.pth")
    seen = []
    original = SAM.training_prompts
    monkeypatch.setattr(
        SAM, "training_prompts", lambda self, labels: seen.append(1) or original(self, labels)
    )
    kwargs = json.dumps({"variant": "tiny", "checkpoint": str(tmp_path / "sam_tiny.pth")})
    run = tmp_path / "run"
    options = ["--epochs", "1", "--steps-per-epoch", "2", "--batch", "2", "--device", "cpu"]
    code = main(["train", str(rgb_folder), "--model", "sam_adapter", "--out", str(run), *options,
                 "--model-kwargs", kwargs])  # fmt: skip
    assert code == 0 and len(seen) == 2  # every step got boxes from its label patch
    weights = torch.load(run / "model.pt", weights_only=True)
    frozen = "image_encoder.blocks.0.attn.qkv.weight"  # the frozen ViT keeps the pretrained values
    assert torch.equal(weights[frozen], checkpoint[frozen])
    assert "checkpoint" not in json.loads((run / "medattn.json").read_text())["model_kwargs"]
    image = rgb_folder / "images" / "f0.png"
    code = main(["predict", str(image), str(tmp_path / "out"), "--model", str(run), "--box", "5,5,20,20",
                 "--format", "png", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert np.asarray(Image.open(tmp_path / "out" / "f0.png")).shape == (32, 32)


def test_compile_of_a_prompted_model_is_a_clear_error(package):
    with pytest.raises(ConfigError, match="--compile compiles sliding-window networks"):
        medattn.load_model(package, device="cpu", compile=True)
