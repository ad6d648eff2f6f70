"""`medattn track` end to end on synthetic visits (tests/follow_up.py): every status and category, the
measures against the truth, the outputs' names and columns, the bad inputs, and --model."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser

import nibabel as nib
import nrrd
import numpy as np
import pytest
from follow_up import DATES, LESIONS, make_follow_up
from PIL import Image

import medattn
from medattn.cli.main import main
from medattn.errors import ConfigError
from medattn.longitudinal.growth import GROWTH_COLUMNS, LESION_COLUMNS, doubling_time_days
from medattn.longitudinal.pictures import LESION_PALETTE, lesion_color

SAMPLE_MODEL = "sample_data/models/brain_mri"


@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("follow_up")
    follow_up = make_follow_up(folder, visit_spacing=(3.0, 3.0, 2.5))
    result = medattn.track(folder / "scans", out=folder / "out", masks=follow_up.masks)
    return folder, follow_up, result


def _lesion_at(rows, point, date, radius=4.0):
    """The row of `date` whose baseline-frame centroid lies within `radius` mm of `point`."""
    near = [
        r
        for r in rows
        if r.date == date.isoformat()
        and r.centroid_x is not None
        and np.linalg.norm(np.subtract((r.centroid_x, r.centroid_y, r.centroid_z), point)) < radius
    ]
    assert len(near) == 1, (point, date, near)
    return near[0]


def test_every_status_and_category(followed):
    _, _, result = followed
    rows, growth = result.lesions, {g.lesion: g for g in result.growth}
    baseline, second, third = DATES
    a = _lesion_at(rows, LESIONS["A"][0][0], baseline).lesion
    assert [r.status for r in rows if r.lesion == a] == ["baseline", "growing", "growing"]
    assert growth[a].category == "progression"
    b = _lesion_at(rows, LESIONS["B"][0][0], baseline).lesion
    assert [r.status for r in rows if r.lesion == b] == ["baseline", "shrinking", "shrinking"]
    assert growth[b].category == "partial response" and growth[b].doubling_time_days is None
    c = _lesion_at(rows, LESIONS["C"][0][0], baseline).lesion
    assert [(r.status, r.volume_ml) for r in rows if r.lesion == c][-1] == ("vanished", 0.0)
    assert growth[c].category == "complete response" and growth[c].last_date == third.isoformat()
    pieces = [_lesion_at(rows, centre, second) for centre, _ in LESIONS["D"][1]]
    d = _lesion_at(rows, LESIONS["D"][0][0], baseline).lesion
    assert {p.status for p in pieces} == {"split"} and d in {p.lesion for p in pieces}
    e = _lesion_at(rows, LESIONS["E"][1][0], second)
    assert e.status == "new" and growth[e.lesion].first_date == second.isoformat()
    f = _lesion_at(rows, LESIONS["F"][0][0], baseline).lesion
    assert {r.status for r in rows if r.lesion == f} == {"baseline", "stable"}
    assert growth[f].category == "stable"
    merged = _lesion_at(rows, LESIONS["G"][1][0], second)
    assert merged.status == "merged"
    g, h = (_lesion_at(rows, LESIONS[k][0][0], baseline).lesion for k in "GH")
    assert merged.lesion in {g, h}
    assert {r.status for r in rows} == {
        "baseline",
        "new",
        "growing",
        "stable",
        "shrinking",
        "merged",
        "split",
        "vanished",
    }
    assert {g.category for g in result.growth} == {
        "progression",
        "partial response",
        "complete response",
        "stable",
    }


def test_measures_equal_the_voxels_and_the_fit(followed):
    folder, follow_up, result = followed
    for visit, date in zip(result.visits, DATES, strict=True):
        mask = nib.load(follow_up.masks / f"{visit['case']}.nii.gz")
        voxel_ml = abs(np.linalg.det(mask.affine[:3, :3])) / 1000.0
        total = sum(r.volume_ml for r in result.lesions if r.date == date.isoformat())
        assert total == pytest.approx(np.asarray(mask.dataobj).sum() * voxel_ml, abs=1e-5)
    for g in result.growth:
        present = [r for r in result.lesions if r.lesion == g.lesion and r.status != "vanished"]
        expected = doubling_time_days([r.days for r in present], [r.volume_ml for r in present])
        assert g.doubling_time_days == (None if expected is None else pytest.approx(expected, abs=0.05))
    # The registration put every centroid back where the lesion was drawn (baseline RAS mm).
    f = _lesion_at(result.lesions, LESIONS["F"][0][0], DATES[2], radius=1.5)
    assert f.diameter_mm == pytest.approx(16.0, abs=3.6)
    for visit, truth in zip(result.visits, follow_up.truth_to_visit_ras, strict=True):
        assert (
            np.abs(np.array(visit["registration"]["baseline_to_visit_ras"])[:3, 3] - truth[:3, 3]).max() < 1.5
        )


def test_output_files(followed):
    folder, _, result = followed
    out = folder / "out"
    with open(out / "lesions.csv") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == LESION_COLUMNS
        assert len(list(reader)) == len(result.lesions)
    with open(out / "growth.csv") as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == GROWTH_COLUMNS
    report = json.loads((out / "report.json").read_text())
    assert [v["date"] for v in report["visits"]] == [d.isoformat() for d in DATES]
    assert all(v["date_source"] == "file name" for v in report["visits"])
    assert report["settings"]["progression_percent"] == 40.0 and report["versions"]["SimpleITK"]
    assert any("split_from" in e for e in report["events"]) and any(
        "merged_into" in e for e in report["events"]
    )
    # One segment per lesion, named and coloured alike at every visit.
    segments = {}
    for visit in report["visits"]:
        _, header = nrrd.read(out / "masks" / f"{visit['case']}.seg.nrrd")
        for key, value in header.items():
            if key.endswith("_Name"):
                color = header[key.replace("_Name", "_Color")]
                value_key = int(header[key.replace("_Name", "_LabelValue")])
                assert value == f"lesion {value_key}"
                segments.setdefault(value, set()).add(color)
    assert len(segments) == len(result.growth) and all(len(colors) == 1 for colors in segments.values())
    expected = " ".join(f"{c / 255:.6g}" for c in lesion_color(1))
    assert segments["lesion 1"] == {expected}
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # opens offline
    assert html.count("data:image/png;base64,") == len(result.growth) + len(result.lesions)


def test_bad_inputs(tmp_path, followed):
    folder, follow_up, _ = followed
    scans = sorted((folder / "scans").iterdir())
    with pytest.raises(ConfigError, match="either --model"):
        medattn.track(scans, out=tmp_path / "o")
    empty = tmp_path / "masks"
    empty.mkdir()
    (empty / f"{scans[0].name}").write_bytes((follow_up.masks / scans[0].name).read_bytes())
    with pytest.raises(ConfigError, match=r"no mask for the scan 'visit_2024-04-10'"):
        medattn.track(scans, out=tmp_path / "o", masks=empty)
    assert not (tmp_path / "o").exists()  # refused before any work
    with pytest.raises(ConfigError, match="found one scan"):
        medattn.track(scans[:1], out=tmp_path / "o", masks=follow_up.masks)
    # The CLI: one red line and exit code 1, no traceback.
    assert main(["track", str(scans[0]), "--out", str(tmp_path / "o"), "--masks", str(follow_up.masks)]) == 1


def test_masks_with_several_labels_need_label(tmp_path, followed):
    folder, follow_up, _ = followed
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in follow_up.masks.iterdir():
        image = nib.load(path)
        labels = np.asarray(image.dataobj).astype(np.uint8) * 3
        labels[:3] = 1  # a second label
        nib.save(nib.Nifti1Image(labels, image.affine), masks / path.name)
    scans = sorted((folder / "scans").iterdir())[:2]
    with pytest.raises(ConfigError, match="hold the labels 1, 3; choose"):
        medattn.track(scans, out=tmp_path / "o", masks=masks)
    assert not (tmp_path / "o").exists()  # refused before OUT is made
    result = medattn.track(scans, out=tmp_path / "o", masks=masks, label="3")
    expected = [r for r in followed[2].lesions if r.date <= DATES[1].isoformat()]
    assert sorted(r.volume_ml for r in result.lesions) == sorted(r.volume_ml for r in expected)


def test_with_the_sample_model(tmp_path, followed):
    folder, _, _ = followed
    out = tmp_path / "out"
    dates = ",".join(d.isoformat() for d in DATES)
    code = main(
        ["track", str(folder / "scans"), "--out", str(out), "--model", SAMPLE_MODEL, "--dates", dates]
    )
    assert code == 0
    assert sorted(p.name for p in (out / "segmentations").glob("*.nii.gz")) == [
        f"visit_{d.isoformat()}.nii.gz" for d in DATES
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["label"] == 3 and report["settings"]["label_name"] == "lesion"
    assert {v["date_source"] for v in report["visits"]} == {"dates option"}
    for name in ("lesions.csv", "growth.csv", "report.html"):
        assert (out / name).is_file()


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: dict[str, int] = {}
        self.images = 0
        self._table = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
        elif tag == "tr" and self._table:
            self.rows[self._table] = self.rows.get(self._table, 0) + 1
        elif tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,"):
            self.images += 1


def test_report_in_a_headless_browser(tmp_path, followed):
    """report.html as Chromium renders it offline: the summary table, the plots and the slices show."""
    folder, _, result = followed
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (CI installs it and does not skip)")
    page = folder / "out" / "report.html"
    tags = _Tags()
    tags.feed(page.read_text())
    assert tags.rows["summary"] == len(result.growth) + 1 and tags.rows["visits"] == len(DATES) + 1
    assert tags.images == len(result.growth) + len(result.lesions)
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
            page.as_uri(),
        ],
        check=True, capture_output=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert pixels.shape[:2] == (2000, 1200)
    not_white = (pixels < 235).any(axis=-1)
    assert not_white.mean() > 0.1 and pixels.std() > 30  # text, tables and pictures, not a blank page
    # Dark table text in the top part, grey slices and the lesions' colours (swatches, contours, plots).
    assert (pixels[:400] < 60).all(axis=-1).sum() > 2000
    grey = (np.ptp(pixels, axis=-1) < 8) & (pixels[..., 0] > 40) & (pixels[..., 0] < 200)
    assert grey.sum() > 50_000
    for color in LESION_PALETTE[:4]:
        assert (np.abs(pixels - np.array(color)).max(axis=-1) < 12).sum() > 200, color


def test_dicom_visits_with_dicom_seg_output(tmp_path):
    """DICOM series dated by StudyDate, masks by case id, lesion masks written as DICOM SEG."""
    from dicom_factory import write_series

    from medattn.io import load_image, save_mask
    from medattn.io.dicom.seg import read_dicom_seg

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 200, (24, 24, 10)).astype(np.int16)
    radius = {"v1": 3.0, "v2": 4.0}
    masks = tmp_path / "masks"
    masks.mkdir()
    for name, date in (("v1", "20230102"), ("v2", "20230702")):
        write_series(tmp_path / "scans" / name, volume, modality="MR", attributes={"StudyDate": date})
        image = load_image(tmp_path / "scans" / name)
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape[1:]], indexing="ij"))
        spacing = np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0).reshape(3, 1, 1, 1)
        ball = (
            np.linalg.norm((grid - np.array([12, 12, 5]).reshape(3, 1, 1, 1)) * spacing, axis=0)
            <= radius[name]
        )
        save_mask(ball.astype(np.uint8), masks / f"{name}.nii.gz", reference=image)
    result = medattn.track(tmp_path / "scans", out=tmp_path / "out", masks=masks, format="dicom-seg")
    assert [(r.date, r.status) for r in result.lesions] == [
        ("2023-01-02", "baseline"),
        ("2023-07-02", "growing"),
    ]
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["v1.dcm", "v2.dcm"]
    seg = read_dicom_seg(tmp_path / "out" / "masks" / "v2.dcm")  # segment numbers: lesion 1 is segment 1
    assert int(np.asarray(seg).sum()) == round(result.lesions[1].volume_ml * 1000 / (0.8 * 0.6 * 2.5))
