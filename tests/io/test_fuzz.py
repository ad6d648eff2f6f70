"""Every reader survives damaged files: seeded mutation fuzzing (tests/io/fuzzing.py) in CI.

Each format's damaged copies (truncated, flipped header bytes, zeroed blocks, appended garbage, absurd
header integers) must end in a MedattnError naming the file or in an image whose array and placement are
finite and non-degenerate, within a time limit per file and an address-space limit per run. The run by
hand takes more copies: `python tests/io/fuzzing.py --count 3000`.
"""

import fuzzing
import pytest

#: Damaged copies per format in CI (a few seconds per format).
COUNT = 240


@pytest.mark.parametrize(
    "group",
    [
        ["nifti", "nifti_gz", "nrrd", "mha", "seg_nrrd"],
        ["png", "jpeg", "tiff", "tiff_pages", "bmp", "video"],
        ["dicom", "dicom_enhanced", "dicom_series", "dicom_seg"],
    ],
)
def test_damaged_files_end_in_a_clear_error_or_a_placeable_image(group):
    failures = fuzzing.fuzz_in_child(group, COUNT, seed=0)
    assert not failures, "\n".join(str(f) for f in failures[:20])


def test_the_fuzzer_finds_a_reader_that_fails_badly(monkeypatch):
    """The harness itself: a reader that lets a foreign error through is reported, with its mutation."""
    from medattn.errors import UnreadableImageError

    def fragile(path):
        if not path.read_bytes().endswith(b"IEND\xaeB`\x82"):  # a PNG's last chunk cut off or buried
            raise ValueError("damaged end")
        raise UnreadableImageError("damaged", path)

    make, header, damaged, _ = fuzzing.FORMATS["png"]
    monkeypatch.setitem(fuzzing.FORMATS, "png", (make, header, damaged, fragile))
    failures = fuzzing.run_format("png", 12, seed=0)
    assert failures and all(f["problem"] == "ValueError: damaged end" for f in failures)
    assert {"truncate", "append_garbage"} <= {f["mutation"] for f in failures}
