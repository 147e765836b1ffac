"""DICOM decoding: modality LUT + window, MONOCHROME1, multi-frame policy, preamble detection,
undecodable compression; plus the demo target built from package-shipped images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _makers import write_dicom

from imagesets import build_demo_target, decode_file, read_imageset
from imagesets._pixels import FileFault


def _ct_ramp() -> np.ndarray:
    # stored values 0..2047 -> HU -1024..1023 after the rescale intercept
    return np.tile(np.linspace(0, 2047, 16).round().astype(np.uint16), (16, 1))


def test_modality_lut_then_window(tmp_path: Path) -> None:
    p = write_dicom(tmp_path / "ct.dcm", _ct_ramp(), window=(40, 400), intercept=-1024)
    img, info = decode_file(str(p), side=16)
    hu = _ct_ramp()[0].astype(float) - 1024
    row = img[0, :, 0]
    assert (row[hu <= -160] == 0).all() and (row[hu >= 240] == 255).all()
    mid = (hu > -160) & (hu < 240)
    assert mid.any() and ((row[mid] > 0) & (row[mid] < 255)).all()
    assert info == {"format": "dicom", "bits": 12, "modality": "CT", "native": (16, 16)}


def test_monochrome1_is_inverted_and_preamble_found_without_extension(tmp_path: Path) -> None:
    m2 = write_dicom(tmp_path / "m2.dcm", _ct_ramp())
    m1 = write_dicom(tmp_path / "noext", _ct_ramp(), photometric="MONOCHROME1", modality="CR")
    a, _ = decode_file(str(m2), side=16)
    b, info = decode_file(str(m1), side=16)
    assert np.array_equal(b, 255 - a) and info["modality"] == "CR"
    assert a[0, 0, 0] == 0 and a[0, -1, 0] == 255  # no window: own min..max


def test_multiframe_takes_middle_frame(tmp_path: Path) -> None:
    frames = np.stack([np.full((8, 8), v, dtype=np.uint16) for v in (10, 100, 190)])
    frames[:, 0, 0] += 1  # not constant, so nothing degenerates
    p = write_dicom(tmp_path / "mf.dcm", frames, window=(100, 60))
    img, _ = decode_file(str(p), side=8)
    assert 100 < int(np.median(img)) < 160  # frame 0 would be 0, frame 2 would be 255


def test_undecodable_compression_is_a_counted_fault(tmp_path: Path) -> None:
    p = write_dicom(tmp_path / "jls.dcm", _ct_ramp(), compressed_garbage=True)
    with pytest.raises(FileFault) as exc:
        decode_file(str(p), side=16)
    assert exc.value.reason == "unsupported DICOM compression"
    trunc = write_dicom(tmp_path / "t.dcm", _ct_ramp())
    trunc.write_bytes(trunc.read_bytes()[:-200])
    with pytest.raises(FileFault) as exc2:
        decode_file(str(trunc), side=16)
    assert exc2.value.reason == "truncated or corrupt"


def test_demo_target_builds_from_shipped_images(tmp_path: Path) -> None:
    root = build_demo_target(tmp_path / "demo")
    s = read_imageset(root, side=32, require_labels=True)
    assert s.class_names == ["medical", "natural"]
    assert min(s.card.class_counts.values()) >= 30 and s.card.n_skipped == 0
    assert s.card.file_formats.get("dicom", 0) >= 1 and sum(s.card.modalities.values()) >= 1
    assert (root / ".catscans-demo").is_file()  # marks the folder as safe to rebuild
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "mine.txt").write_text("keep me")
    with pytest.raises(Exception, match="not empty"):
        build_demo_target(tmp_path / "user")
