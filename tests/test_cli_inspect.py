"""`catscans inspect` on a messy labelled folder: exact counts of images, classes, formats,
bit depths, modalities and skipped files by reason; one-line errors with exit 2."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_imagesets_dicom import write_dicom
from typer.testing import CliRunner

from recommender.cli import app

runner = CliRunner()


def _forge_huge_png(path: Path, width: int = 100_000, height: int = 100_000) -> None:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    Image.new("L", (4, 4)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def make_messy_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    a, b = root / "alpha", root / "beta"
    (a / "sub" / "deeper").mkdir(parents=True)
    b.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)).save(a / "grey.png")
    Image.fromarray(rng.integers(0, 4000, (50, 60), dtype=np.uint16)).save(a / "deep16.PNG")
    Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(a / "photo.JPG", quality=90)
    Image.new("P", (20, 20), 3).save(a / "sub" / "deeper" / "palette.png")
    Image.fromarray(rng.integers(0, 256, (10, 10, 4), dtype=np.uint8), "RGBA").save(a / "rgba.png")
    Image.new("L", (8, 8)).save(a / ".hidden.png")  # ignored, not counted
    (a / ".cache").mkdir()
    Image.new("L", (8, 8)).save(a / ".cache" / "thumb.png")  # hidden folder: ignored
    (a / "empty.png").write_bytes(b"")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(a / "cut.png")
    (a / "cut.png").write_bytes((a / "cut.png").read_bytes()[:300])
    (a / "notes.txt").write_text("not an image\n")
    ramp = np.tile(np.arange(0, 4096, 256, dtype=np.uint16), (16, 1))
    write_dicom(b / "ct.dcm", ramp, window=(40, 400), intercept=-1024)
    write_dicom(b / "cr.DCM", ramp, photometric="MONOCHROME1", modality="CR")
    write_dicom(b / "IM0001", ramp, modality="MR")  # no extension: found by the DICM preamble
    write_dicom(b / "jpegls.dcm", ramp, compressed_garbage=True)
    Image.fromarray(rng.integers(0, 60000, (24, 24), dtype=np.uint16)).save(b / "slide.tif")
    Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(b / "scan.bmp")
    _forge_huge_png(b / "bomb.png")
    (root / "README.txt").write_text("next to the class folders\n")
    return root


def test_inspect_messy_folder_exact_counts(tmp_path: Path) -> None:
    root = make_messy_folder(tmp_path / "messy")
    res = runner.invoke(app, ["inspect", str(root), "--side", "16", "--format", "json"])
    assert res.exit_code == 0, res.output
    card = json.loads(res.stdout)
    assert card["n_images"] == 10 and card["n_classes"] == 2
    assert card["class_counts"] == {"alpha": 5, "beta": 5}
    assert card["file_formats"] == {"bmp": 1, "dicom": 3, "jpeg": 1, "png": 4, "tiff": 1}
    assert card["bit_depths"] == {"12": 3, "16": 2, "8": 5}
    assert card["modalities"] == {"CR": 1, "CT": 1, "MR": 1}
    assert card["channels"] == 3 and card["side"] == 16
    assert card["n_skipped"] == 6
    assert card["skipped_reasons"] == {
        "decompression bomb": 1, "empty file": 1, "not an image": 1, "not in a class folder": 1,
        "truncated or corrupt": 1, "unsupported DICOM compression": 1}
    assert card["native_size"]["h_max"] == 64 and card["native_size"]["w_min"] == 10


def test_inspect_table_and_csv(tmp_path: Path) -> None:
    root = make_messy_folder(tmp_path / "messy")
    table = runner.invoke(app, ["inspect", str(root)])
    assert table.exit_code == 0 and "skipped files by reason" in table.stdout
    csv = runner.invoke(app, ["inspect", str(root), "--format", "csv"])
    assert csv.exit_code == 0
    rows = dict(line.split(",", 1) for line in csv.stdout.strip().splitlines()[1:])
    assert rows["n_images"] == "10" and rows["class_counts.beta"] == "5"
    assert rows["skipped_reasons.empty file"] == "1"


@pytest.mark.parametrize("args", [["/no/such/dir"], ["/no/such/dir", "--format", "json"]])
def test_inspect_missing_path_is_one_line_exit_2(args: list[str]) -> None:
    res = runner.invoke(app, ["inspect", *args])
    assert res.exit_code == 2
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "no such file or folder" in res.stderr
    assert "Traceback" not in res.output


def test_inspect_only_bad_files_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("x")
    res = runner.invoke(app, ["inspect", str(tmp_path)])
    assert res.exit_code == 2 and "no readable image" in res.stderr
