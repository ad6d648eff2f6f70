"""DICOM: find series in a folder, read them into MetaTensors, write DICOM SEG on a source series.

Modules, in the order a series goes through them:
- `series`: the image series under a folder (by SeriesInstanceUID; multi-volume series split), localizers.
- `slices`: which files of a classic series make its volume (copies and stray localizers left out).
- `geometry`: slice planes, sorting along the normal, grid checks, the RAS affine, gantry tilt.
- `headers`: lenient header access shared by the others.
- `pixels`: pixel decoding, MONOCHROME1, palette colour, modality LUT.
- `read`: `read_dicom`, for a file, a folder or one series' files.
- `source`: the series a DICOM SEG is written for and its grid (the reader's grid, to the voxel).
- `seg`: DICOM SEG writing and reading with highdicom.
"""
