"""Find the cases in a folder, whatever layout a researcher keeps them in.

Layouts, tried in this order on each folder:
- nnU-Net v2: imagesTr/ (+ labelsTr/), imagesTs/ (+ labelsTs/), `_0000`-style channel suffixes, dataset.json;
- paired folders: images/ + labels/ (or masks/), files matched by name (a `_mask`/`_label`/`_seg` tail is
  allowed on the label);
- anything else: every image or video file is a case (channel suffixes grouped), every DICOM series a case;
  sub-folders that hold a layout of their own are searched too, so a folder of datasets works.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from monai.data import MetaTensor

from medattn.errors import InputNotFoundError, InputWarning, MedattnError, NoCasesFoundError
from medattn.io.atomic import full_suffix
from medattn.io.dicom.series import DicomSeries, find_dicom_series, looks_like_dicom, without_localizers
from medattn.io.formats import IMAGE2D_SUFFIXES, VIDEO_SUFFIXES, supported_suffix
from medattn.io.load import load_image

ANONYMOUS = "dicom"  # placeholder id of a series whose folder names the patient; numbered at the end
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
LABEL_TAILS = ("_mask", "_masks", "_label", "_labels", "_seg", "_gt", "_segmentation")
IMAGE_FOLDERS = ("images", "image", "imgs", "img")
LABEL_FOLDERS = ("labels", "label", "masks", "mask", "segmentations", "gt")
MAX_DEPTH = 4
# Image formats met in research folders that medattn does not read: named in a warning, not skipped silently.
UNREAD_IMAGE_SUFFIXES = (".mgz", ".mgh", ".hdr", ".img", ".mnc", ".gif", ".jp2", ".webp", ".heic")


@dataclass
class Case:
    """One subject to segment: its channel files (or DICOM series files) and, when known, its label file.

    Attributes:
        id: unique name used for output files (`<id>.nii.gz`); never a patient name or ID.
        images: one path per channel, or the files of one DICOM series (`dicom=True`).
        label: the reference mask, if the layout pairs one.
        kind: 'volume', 'image2d', 'video' or 'dicom'.
        subset: 'train' / 'test' in nnU-Net layout, else None.
        group: the sub-folder (relative to the discovered root) the case came from.
    """

    id: str
    images: list[Path]
    label: Path | None = None
    kind: str = "volume"
    subset: str | None = None
    group: str = ""
    series_uid: str | None = None
    patient_tokens: tuple[str, ...] = field(default=(), repr=False)  # only to keep them out of ids

    @property
    def dicom(self) -> bool:
        return self.kind == "dicom"

    def load_image(self, **kwargs) -> MetaTensor:
        """The case's image, channels stacked: all channel files must share one grid.

        Keyword arguments go to `medattn.io.load_image`; `channels` is checked on the stacked result.
        """
        import torch

        from medattn.errors import GeometryError

        channels_needed = kwargs.pop("channels", None)
        if self.dicom:
            image = load_image(self.images, **kwargs)
        elif len(self.images) == 1:
            image = load_image(self.images[0], **kwargs)
        else:
            channels = [load_image(p, **kwargs) for p in self.images]
            for path, channel in zip(self.images[1:], channels[1:], strict=True):
                if channel.shape[1:] != channels[0].shape[1:] or not torch.allclose(
                    channel.affine, channels[0].affine, atol=1e-3
                ):
                    raise GeometryError(f"channel grid differs from {self.images[0].name}'s", path)
            stacked = torch.cat([c.as_tensor() for c in channels], dim=0)
            meta = {k: v for k, v in channels[0].meta.items() if k != "affine"}
            image = MetaTensor(stacked, affine=channels[0].affine, meta=meta)
        if channels_needed is not None and image.shape[0] != channels_needed:
            raise GeometryError(
                f"expected {channels_needed} channel(s), found {image.shape[0]} (shape {tuple(image.shape)})",
                self.images[0],
            )
        return image

    def load_label(self, **kwargs) -> MetaTensor | None:
        return None if self.label is None else load_image(self.label, dtype=None, **kwargs)


@dataclass
class Dataset:
    """What `discover` found: the cases, the layout name, and label names when the layout declares them."""

    root: Path
    layout: str
    cases: list[Case] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)
    channel_names: dict[int, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> Case:
        return self.cases[index]

    def by_id(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(case_id)


def _safe_id(text: str) -> str:
    """Case ids become file names on every OS: keep letters, digits, '.', '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "case"


def _stem(path: Path) -> str:
    suffix = full_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _kind(path: Path) -> str:
    suffix = full_suffix(path)
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return "image2d" if suffix in IMAGE2D_SUFFIXES else "volume"


def _image_files(folder: Path, scans: bool = True) -> list[Path]:
    """The image files of a folder; with `scans`, without 3D Slicer segmentations (.seg.nrrd), which Slicer
    users keep beside their scans (`scan.nrrd` + `scan.seg.nrrd` would read as one two-channel case)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and supported_suffix(p)
        and full_suffix(p) != ".dcm"
        and not (scans and full_suffix(p) == ".seg.nrrd")
    )


def _group_channels(files: list[Path]) -> dict[str, list[Path]]:
    """Case id -> channel files; `brain_001_0000.nii.gz` and `_0001` are two channels of `brain_001`."""
    grouped: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in files:
        match = CHANNEL_SUFFIX.match(_stem(path))
        if match:
            grouped[match["case"]].append((int(match["channel"]), path))
        else:
            grouped[_stem(path)].append((0, path))
    return {_safe_id(case): [p for _, p in sorted(channels)] for case, channels in grouped.items()}


def _match_label(case_id: str, label_folder: Path | None, ending: str | None = None) -> Path | None:
    if label_folder is None or not label_folder.is_dir():
        return None
    by_stem = {_stem(p): p for p in _image_files(label_folder, scans=False)}
    for candidate in (case_id, *(case_id + tail for tail in LABEL_TAILS)):
        if candidate in by_stem and (ending is None or by_stem[candidate].name.endswith(ending)):
            return by_stem[candidate]
    return None


def _read_dataset_json(folder: Path) -> dict:
    path = folder / "dataset.json"
    if not path.is_file():
        return {}
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MedattnError(f"dataset.json is not valid JSON ({error})", path) from error
    if not isinstance(spec, dict):
        raise MedattnError(
            "dataset.json must hold a JSON object (nnU-Net's labels, channel_names, ...)", path
        )
    for key in ("labels", "channel_names", "modality"):
        if key in spec and not isinstance(spec[key], dict):
            raise MedattnError(f'"{key}" in dataset.json must map names to values, found {spec[key]!r}', path)
    return spec


def _nnunet(folder: Path, group: str) -> Dataset:
    spec = _read_dataset_json(folder)
    ending = spec.get("file_ending")
    dataset = Dataset(root=folder, layout="nnunet")
    # nnU-Net v2 maps name -> value (a list for region-based training); v1 mapped value -> name.
    for key, value in (spec.get("labels") or {}).items():
        if isinstance(value, int):
            dataset.labels[value] = key
        elif str(key).isdigit():
            dataset.labels[int(key)] = str(value)
    names = spec.get("channel_names") or spec.get("modality") or {}
    dataset.channel_names = {int(k): str(v) for k, v in names.items() if str(k).isdigit()}
    for images_dir, labels_dir, subset in (
        ("imagesTr", "labelsTr", "train"),
        ("imagesTs", "labelsTs", "test"),
    ):
        if not (folder / images_dir).is_dir():
            continue
        files = [p for p in _image_files(folder / images_dir) if ending is None or p.name.endswith(ending)]
        for case_id, channels in _group_channels(files).items():
            label = _match_label(case_id, folder / labels_dir, ending)
            dataset.cases.append(Case(case_id, channels, label, _kind(channels[0]), subset, group))
    return dataset


def _paired(folder: Path, images: Path, labels: Path | None, group: str) -> Dataset:
    dataset = Dataset(root=folder, layout="paired")
    for case_id, channels in _group_channels(_image_files(images)).items():
        label = _match_label(case_id, labels)
        dataset.cases.append(Case(case_id, channels, label, _kind(channels[0]), None, group))
    return dataset


def _dicom_case_id(series: DicomSeries, root: Path) -> str:
    """A file-name-safe id from the series' folder (or file); never a patient's name or ID."""
    anchor = series.files[0] if len(series.files) == 1 else series.folder
    try:
        base = "_".join(anchor.relative_to(root).parts) or root.name
    except ValueError:
        base = anchor.name
    if len(series.files) == 1:
        base = _stem(Path(base))
    if _names_patient(base, series.patient_tokens):
        return ANONYMOUS
    return _safe_id(base)


def _volume_id(case_id: str, series: DicomSeries) -> str:
    """One volume of a series that holds several (echoes, phases, ...): its label appended, "<id>_e2"."""
    if not series.volume or case_id == ANONYMOUS:  # anonymous ids are numbered later, one per volume
        return case_id
    return f"{case_id}_{series.volume}"


def _names_patient(text: str, tokens: tuple[str, ...]) -> bool:
    lowered = text.lower()
    return any(token in lowered for token in tokens)


def _dicom_cases(folder: Path, series_list: list[DicomSeries], group: str) -> list[Case]:
    cases = [
        Case(
            _volume_id(_dicom_case_id(s, folder), s),
            list(s.files),
            None,
            "dicom",
            None,
            group,
            s.uid,
            s.patient_tokens,
        )
        for s in series_list
    ]
    # Several series in one folder: tell them apart by series number, then by position.
    by_id: dict[str, list[tuple[Case, DicomSeries]]] = defaultdict(list)
    for case, series in zip(cases, series_list, strict=True):
        by_id[case.id].append((case, series))
    for case_id, members in by_id.items():
        if len(members) == 1 or case_id == ANONYMOUS:
            continue
        for position, (case, series) in enumerate(members):
            number = series.series_number
            case.id = f"{case_id}_s{number}" if number is not None else f"{case_id}_{position}"
    return cases


def _discover_folder(folder: Path, root: Path, depth: int) -> list[Dataset]:
    group = "" if folder == root else str(folder.relative_to(root))
    if (folder / "imagesTr").is_dir() or (folder / "imagesTs").is_dir():
        return [_nnunet(folder, group)]
    images = next((folder / n for n in IMAGE_FOLDERS if (folder / n).is_dir()), None)
    labels = next((folder / n for n in LABEL_FOLDERS if (folder / n).is_dir()), None)
    if images is not None and _image_files(images):
        return [_paired(folder, images, labels, group)]
    found: list[Dataset] = []
    files = _image_files(folder)
    if files:
        flat = Dataset(root=folder, layout="flat")
        for case_id, channels in _group_channels(files).items():
            flat.cases.append(Case(case_id, channels, None, _kind(channels[0]), None, group))
        found.append(flat)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    dicom_here = [p for p in folder.iterdir() if p.is_file() and looks_like_dicom(p)]
    if dicom_here or (subfolders and depth >= MAX_DEPTH):
        # A DICOM tree: series anywhere below; grouped by SeriesInstanceUID, one case each.
        series = without_localizers(find_dicom_series(folder), folder)
        if series:
            found.append(Dataset(root=folder, layout="dicom", cases=_dicom_cases(root, series, group)))
        return found
    for sub in subfolders:
        found.extend(_discover_folder(sub, root, depth + 1))
    return found


def _unique_ids(cases: list[Case]) -> None:
    """Ids become output file names: anonymous DICOM cases are numbered across the tree, a group prefix
    tells apart same-named cases of two sub-folders (unless the folder names the patient), and whatever
    still collides is numbered."""
    anonymous = [case for case in cases if case.id == ANONYMOUS]
    for number, case in enumerate(anonymous):
        case.id = f"dicom_{number:03d}"
    counts: dict[str, int] = defaultdict(int)
    for case in cases:
        counts[case.id] += 1
    for case in cases:
        prefixed = _safe_id(f"{case.group}_{case.id}")
        if counts[case.id] > 1 and case.group and not _names_patient(prefixed, case.patient_tokens):
            case.id = prefixed
    seen: dict[str, int] = defaultdict(int)
    for case in cases:
        seen[case.id] += 1
        if seen[case.id] > 1:
            case.id = f"{case.id}_{seen[case.id]}"


def _warn_unreadable_images(folder: Path) -> None:
    """One InputWarning for image files of formats medattn does not read (FreeSurfer .mgz, Analyze or
    NIfTI pairs .hdr/.img, MINC, GIF, ...), so that they are not left out of a batch without a word."""
    skipped = sorted(
        p
        for depth in range(MAX_DEPTH + 1)
        for p in folder.glob("/".join(["*"] * (depth + 1)))
        if p.suffix.lower() in UNREAD_IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    if skipped:
        names = ", ".join(str(p.relative_to(folder)) for p in skipped[:3]) + (
            ", ..." if len(skipped) > 3 else ""
        )
        warnings.warn(
            f"{folder}: {len(skipped)} image file(s) in formats medattn does not read are left out "
            f"({names}); convert them to NIfTI (.nii.gz), NRRD, MHA, DICOM or PNG",
            InputWarning,
            stacklevel=3,
        )


def discover(path: str | Path) -> Dataset:
    """Find every case under `path` (a folder in any layout above, or one file / one DICOM series folder).

    Returns:
        A Dataset: iterate it for Cases; `.layout` names what was recognised ('nnunet', 'paired', 'flat',
        'dicom', 'file' or 'mixed' when sub-folders differ), `.labels` maps label values to names when
        the layout declares them (nnU-Net's dataset.json).

    Raises:
        InputNotFoundError: the path does not exist.
        NoCasesFoundError: nothing medattn can read was found.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError("no such file or folder", path)
    if path.is_file():
        kind = "dicom" if looks_like_dicom(path) and full_suffix(path) not in VIDEO_SUFFIXES else _kind(path)
        (case_id,) = _group_channels([path])
        case = Case(case_id, [path], None, kind)
        return Dataset(root=path.parent, layout="file", cases=[case])
    try:
        datasets = _discover_folder(path, path, 0)
    except PermissionError as error:
        raise MedattnError("permission denied while searching for cases", error.filename or path) from error
    cases = [case for dataset in datasets for case in dataset.cases]
    _warn_unreadable_images(path)
    if not cases:
        raise NoCasesFoundError(
            "no images found (looked for NIfTI, NRRD, MHA, DICOM, PNG/JPG/TIFF and video files, "
            "nnU-Net imagesTr/, and images/ + labels/ folders)",
            path,
        )
    _unique_ids(cases)
    layouts = {d.layout for d in datasets}
    result = Dataset(root=path, layout=layouts.pop() if len(layouts) == 1 else "mixed", cases=cases)
    for dataset in datasets:
        result.labels.update(dataset.labels)
        result.channel_names.update(dataset.channel_names)
    return result
