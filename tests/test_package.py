"""Damaged model packages: every fault in medattn.json or model.pt is one PackageError naming the file."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
from full_disk import FullDisk  # tests/ is on sys.path (pythonpath in pyproject.toml)
from tiny_package import make_package

from medattn.errors import DiskFullError, MedattnError, PackageError
from medattn.package import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, load_package
from medattn.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("package") / "tiny")


@pytest.fixture
def copy(package, tmp_path):
    return shutil.copytree(package, tmp_path / "copy")


def _edit_config(folder, edit) -> None:
    path = folder / CONFIG_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_a_saved_package_carries_its_format_version_and_loads(package):
    assert json.loads((package / CONFIG_NAME).read_text())["format_version"] == FORMAT_VERSION
    network, config = load_package(package)
    assert config.model == "agunet" and not network.training


def test_a_package_from_a_newer_medattn_says_to_upgrade(copy):
    _edit_config(copy, lambda data: data.update(format_version=FORMAT_VERSION + 1, plan="a new layout"))
    with pytest.raises(
        PackageError, match=f"{CONFIG_NAME}: the package has format_version 2 .*upgrade medattn"
    ):
        load_package(copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda data: data.pop("model"), "missing field\\(s\\): model"),
        (lambda data: data["plan"].pop("patch_size"), "missing field\\(s\\) of plan: patch_size"),
        (lambda data: data.update(model=3), "model must be a model name, not 3"),
        (lambda data: data.update(model="agunett"), "model 'agunett' .* cannot be built \\(unknown model"),
        (lambda data: data["model_kwargs"].update(base_channels="4"), "model 'agunet' .* cannot be built"),
        (
            lambda data: data["plan"].update(patch_size=[-16, 16, 16]),
            "plan.patch_size must be 3 whole numbers",
        ),
        (lambda data: data["plan"].update(patch_size="16"), "plan.patch_size must be 3 whole numbers"),
        (lambda data: data["plan"].update(num_classes="3"), "plan.num_classes must be a whole number"),
        (lambda data: data["plan"].update(spatial_dims=7), "plan.spatial_dims must be 2 or 3, not 7"),
        (lambda data: data["plan"].update(spacing=[0, 1, 1]), "plan.spacing must be 3 positive numbers"),
        (lambda data: data["plan"].update(preset="xray"), "plan.preset must be one of ct, mr, rgb, medsam"),
        (lambda data: data["plan"].update(normalize_std=0), "plan.normalize_std must be a positive number"),
        (lambda data: data["plan"].update(clip_range=[5, 1]), "plan.clip_range must be \\[low, high\\]"),
        (lambda data: data["plan"].update(labels=[1, 2]), "plan.labels must map label values to names"),
        (lambda data: data.update(label_colors={"1": 5}), "label_colors\\['1'\\] must be a label value"),
        (lambda data: data.update(format_version="1"), "format_version must be a whole number"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_config_field_missing_or_of_the_wrong_type_is_named(copy, edit, message):
    _edit_config(copy, edit)
    with pytest.raises(PackageError, match=f"{CONFIG_NAME}: {message}"):
        load_package(copy)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON at character 0"),
        ('{"model": "agunet", "pla', "not valid JSON at character"),
        ("[1, 2]", "holds a JSON list, not an object of fields"),
    ],
    ids=["empty", "cut short", "a list"],
)
def test_a_config_that_is_not_json_is_named(copy, text, message):
    (copy / CONFIG_NAME).write_text(text)
    with pytest.raises(PackageError, match=f"{CONFIG_NAME}: {message}"):
        load_package(copy)


def _state(folder) -> dict:
    return torch.load(folder / WEIGHTS_NAME, weights_only=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: path.write_bytes(b""), "the file is empty"),
        (lambda path: path.write_bytes(b"<html>not found</html>"), "not a PyTorch weights file"),
        (lambda path: path.write_bytes(path.read_bytes()[:50]), "the file is cut short"),
        (lambda path: path.write_bytes(path.read_bytes()[:-1]), "the file is cut short"),
        (lambda path: torch.save(torch.zeros(3), path), "holds a Tensor, not a state dict"),
        (lambda path: torch.save(torch.nn.Linear(2, 2), path), "holds pickled Python objects"),
        (
            lambda path: torch.save({"weight": torch.zeros(3)}, path),
            "the weights do not fit .* missing key\\(s\\)",
        ),
    ],
    ids=["empty", "html", "cut at 50", "cut at -1", "tensor", "module", "wrong keys"],
)
def test_damaged_weights_are_named(copy, damage, message):
    damage(copy / WEIGHTS_NAME)
    with pytest.raises(PackageError, match=f"{WEIGHTS_NAME}: {message}"):
        load_package(copy)


def test_weights_of_another_shape_name_the_key(copy):
    state = _state(copy)
    key = next(iter(state))
    state[key] = torch.zeros(2, 2)
    torch.save(state, copy / WEIGHTS_NAME)
    with pytest.raises(PackageError, match=f"1 shape mismatch\\(es\\): {key} \\(file \\(2, 2\\)"):
        load_package(copy)


def test_a_byte_changed_inside_a_tensor_fails_its_checksum(copy):
    path = copy / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(
        PackageError, match=f"{WEIGHTS_NAME}: the file is damaged: record .* fails its checksum"
    ):
        load_package(copy)


def test_seeded_mutations_of_a_package_end_in_a_named_error_or_a_working_network(package, tmp_path):
    """Truncated, bit-flipped and zeroed copies of model.pt and medattn.json: each loads a network that
    still predicts, or fails with a MedattnError naming the damaged file."""
    rng = random.Random(0)
    originals = {name: (package / name).read_bytes() for name in (WEIGHTS_NAME, CONFIG_NAME)}
    folder = shutil.copytree(package, tmp_path / "mutated")
    image = torch.zeros(1, 1, 16, 16, 16)
    for trial in range(150):
        name = (WEIGHTS_NAME, CONFIG_NAME)[trial % 2]
        data = bytearray(originals[name])
        kind = ("truncate", "flip", "zero")[trial // 2 % 3]
        if kind == "truncate":
            data = data[: rng.randrange(len(data))]
        elif kind == "flip":
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            start = rng.randrange(len(data))
            data[start : start + 64] = bytes(len(data[start : start + 64]))
        for other, original in originals.items():
            (folder / other).write_bytes(bytes(data) if other == name else original)
        try:
            network, _ = load_package(folder)
        except MedattnError as error:
            assert str(error).startswith(str(folder / name)), (kind, name, error)
            continue
        with torch.no_grad():
            assert network(image).shape[-3:] == image.shape[-3:], (kind, name)


def test_a_damaged_training_checkpoint_is_named(tmp_path):
    path = save_checkpoint({"model": {"w": torch.zeros(256)}, "epoch": 3}, tmp_path / "checkpoint_last.pt")
    assert load_checkpoint(path)["epoch"] == 3
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(PackageError, match="checkpoint_last.pt: the file is cut short"):
        load_checkpoint(path)
    save_checkpoint({"model": {"w": torch.zeros(256)}, "format": 99}, path)
    with pytest.raises(
        PackageError, match="checkpoint_last.pt: checkpoint layout 99 is newer .* upgrade medattn"
    ):
        load_checkpoint(path)


@pytest.mark.parametrize("free", [0, 3_000, 60_000])
def test_a_full_disk_while_saving_weights_names_the_file_and_keeps_nothing(tmp_path, monkeypatch, free):
    """torch.save reports a failed write as a RuntimeError; save_weights names it as a full disk."""
    state = {"weight": torch.zeros(40_000)}
    FullDisk(tmp_path, free).install(monkeypatch)
    with pytest.raises(DiskFullError, match="checkpoint_last.pt: the disk is full"):
        save_checkpoint({"model": state}, tmp_path / "checkpoint_last.pt")
    assert not list(tmp_path.iterdir())


def test_an_instance_norm_agunet_trained_with_normalised_gate_logits_keeps_them(package, tmp_path):
    """Packages trained under instance norm when the gates' one-channel logits were normalised still load,
    with that norm, so their masks do not change; new packages get gates without it."""
    import medattn
    from medattn.package import build_network, read_config, save_package

    config = read_config(package)
    config.model_kwargs = {**config.model_kwargs, "norm": "instance"}
    torch.manual_seed(0)
    config.model_kwargs["gate_logit_norm"] = True
    trained = build_network(config).eval()
    del config.model_kwargs["gate_logit_norm"]  # as medattn.json files written before the option
    folder = save_package(tmp_path / "old_gate", trained.state_dict(), config)
    network, loaded = load_package(folder)
    assert isinstance(network.decoder[0].gate.psi[1], torch.nn.InstanceNorm3d)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network(x), trained(x))
    assert (
        medattn.load_model(folder, device="cpu").network.decoder[0].gate.psi[1].__class__
        is torch.nn.InstanceNorm3d
    )
    fresh = build_network(config)
    assert isinstance(fresh.decoder[0].gate.psi[1], torch.nn.Identity)
