"""imagesets readers: layouts, npz/CSV/medmnist sources, policies, subsampling, determinism."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from imagesets import ImageSetError, read_imageset


def _png(path: Path, value: int | tuple[int, int, int], size: tuple[int, int] = (20, 16),
         seed: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)
        return
    mode = "L" if isinstance(value, int) else "RGB"
    Image.new(mode, size, value).save(path)


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / f"img{i}.png", 10 * i)
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    s = read_imageset(tmp_path, side=8)
    assert s.images.shape == (3, 8, 8, 1)
    assert s.labels is None and s.class_names == [] and s.card.n_classes == 0
    assert s.card.n_skipped == 0  # the hidden file is ignored, not skipped
    with pytest.raises(ImageSetError, match="unlabelled"):
        read_imageset(tmp_path, side=8, require_labels=True)


def test_single_class_fails_when_labels_required(tmp_path: Path) -> None:
    _png(tmp_path / "only" / "a.png", 5)
    _png(tmp_path / "only" / "b.png", 6)
    assert read_imageset(tmp_path, side=8).card.class_counts == {"only": 2}
    with pytest.raises(ImageSetError, match="single class"):
        read_imageset(tmp_path, side=8, require_labels=True)


def test_split_level_and_nested_class_folders(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "cat" / "x" / "y" / "deep.png", 1)
    _png(tmp_path / "train" / "cat" / "a.png", 2)
    _png(tmp_path / "train" / "dog" / "b.png", 3)
    _png(tmp_path / "Test" / "dog" / "c.png", 4)
    _png(tmp_path / "validation" / "cat" / "d.png", 5)
    s = read_imageset(tmp_path, side=4)
    assert s.class_names == ["cat", "dog"]
    assert s.card.class_counts == {"cat": 3, "dog": 2}
    assert s.card.splits == {"test": 1, "train": 3, "val": 1}
    deep = s.paths.index(str(tmp_path / "train" / "cat" / "x" / "y" / "deep.png"))
    assert s.class_names[s.labels[deep]] == "cat" and s.split[deep] == "train"


def test_csv_manifest(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "a.png", 10)
    _png(tmp_path / "imgs" / "b.png", (200, 10, 10))
    _png(tmp_path / "imgs" / "c.png", 30)
    (tmp_path / "m.csv").write_text("path,label\nimgs/a.png,benign\nimgs/b.png,malignant\n"
                                    "imgs/c.png,benign\nimgs/gone.png,benign\n")
    s = read_imageset(tmp_path / "m.csv", side=8)
    assert s.card.class_counts == {"benign": 2, "malignant": 1}
    assert s.card.skipped_reasons == {"missing file": 1}
    assert s.channels == 3
    (tmp_path / "bad.csv").write_text("file,cls\na.png,x\n")
    with pytest.raises(ImageSetError, match="'path' column"):
        read_imageset(tmp_path / "bad.csv")


def test_npz_plain_and_medmnist_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1] * 5)
    np.savez(tmp_path / "plain.npz", images=imgs, labels=labels,
             class_names=np.array(["neg", "pos"]), split=np.array(["train"] * 8 + ["test"] * 2))
    s = read_imageset(tmp_path / "plain.npz", side=28)
    assert np.array_equal(s.images[..., 0], imgs) and s.class_names == ["neg", "pos"]
    assert s.card.splits == {"test": 2, "train": 8}
    s16 = read_imageset(tmp_path / "plain.npz", side=16)
    assert s16.images.shape == (10, 16, 16, 1)

    med = {"train_images": imgs[:6], "train_labels": labels[:6, None],
           "val_images": imgs[6:8], "val_labels": labels[6:8, None],
           "test_images": imgs[8:], "test_labels": labels[8:, None]}
    np.savez(tmp_path / "pneumoniamnist.npz", **med)
    m = read_imageset(tmp_path / "pneumoniamnist.npz", side=28)
    assert m.card.splits == {"test": 2, "train": 6, "val": 2} and m.class_names == ["0", "1"]
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path))
    f = read_imageset("medmnist:pneumoniamnist", side=28)
    assert f.class_names == ["normal", "pneumonia"] and np.array_equal(f.images, m.images)
    with pytest.raises(ImageSetError, match="unknown MedMNIST flag"):
        read_imageset("medmnist:nosuchmnist")
    monkeypatch.setattr("imagesets._npz._online", lambda: False)
    with pytest.raises(ImageSetError, match="no network"):
        read_imageset("medmnist:bloodmnist_64")
    np.savez(tmp_path / "multi.npz", images=imgs, labels=np.zeros((10, 3), dtype=np.int64))
    with pytest.raises(ImageSetError, match="one class per image"):
        read_imageset(tmp_path / "multi.npz")


def test_channel_policies_and_pixel_policies(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "grey.png", 77)
    _png(tmp_path / "b" / "colour.png", (200, 100, 50))
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:4, ..., 3] = 255  # top half opaque white, bottom half transparent white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b" / "alpha.png")
    ramp = (1000 + np.arange(64 * 8) // 2).reshape(8, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a" / "deep16.png")
    keep = read_imageset(tmp_path, side=8, channels="keep")
    grey = read_imageset(tmp_path, side=8, channels="grey")
    rgb = read_imageset(tmp_path, side=8, channels="rgb")
    assert (keep.channels, grey.channels, rgb.channels) == (3, 1, 3)
    i = {Path(p).name: k for k, p in enumerate(keep.paths)}
    assert (rgb.images[i["grey.png"]] == 77).all()
    expected_l = Image.new("RGB", (1, 1), (200, 100, 50)).convert("L").getpixel((0, 0))
    assert (grey.images[i["colour.png"]] == expected_l).all()
    alpha = keep.images[i["alpha.png"]]
    assert (alpha[:3] == 255).all() and (alpha[5:] == 0).all()  # composited on black
    deep = keep.images[i["deep16.png"]][..., 0]
    assert deep.min() <= 2 and deep.max() >= 253  # own min..max stretch
    assert keep.card.bit_depths == {"16": 1, "8": 3}
    only_grey = read_imageset(tmp_path / "a", side=8, channels="keep")
    assert only_grey.channels == 1


def test_max_images_is_stratified_and_seeded(tmp_path: Path) -> None:
    for i in range(30):
        _png(tmp_path / "common" / f"{i}.png", i)
    for i in range(10):
        _png(tmp_path / "rare" / f"{i}.png", 100 + i)
    a = read_imageset(tmp_path, side=4, max_images=8, random_state=3)
    b = read_imageset(tmp_path, side=4, max_images=8, random_state=3)
    c = read_imageset(tmp_path, side=4, max_images=8, random_state=4)
    assert a.card.class_counts == {"common": 6, "rare": 2}
    assert a.paths == b.paths and a.paths != c.paths


def test_parallel_equals_serial_and_fingerprint_ignores_order(tmp_path: Path) -> None:
    src, other = tmp_path / "src", tmp_path / "renamed"
    for i in range(70):
        _png(src / ("x" if i % 2 else "y") / f"{i:03d}.png", 0, size=(24, 20), seed=i)
    one = read_imageset(src, side=16, workers=1)
    two = read_imageset(src, side=16, workers=2)
    assert np.array_equal(one.images, two.images) and np.array_equal(one.labels, two.labels)
    for p in src.rglob("*.png"):  # same files, reversed name order
        dest = other / p.parent.name / f"{999 - int(p.stem):03d}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
    moved = read_imageset(other, side=16, workers=1)
    assert not np.array_equal(moved.images, one.images)
    assert moved.fingerprint() == one.fingerprint()
    relabelled = read_imageset(other / "x", side=16).fingerprint()
    assert relabelled != one.fingerprint()


def test_fatal_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ImageSetError, match="no such file or folder"):
        read_imageset("/no/such/dir")
    (tmp_path / "junk.txt").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageSetError, match="no readable image") as exc:
        read_imageset(tmp_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(ImageSetError, match="side"):
        read_imageset(tmp_path, side=0)


def test_shared_pneumoniamnist() -> None:
    s = read_imageset(shared_path("pneumoniamnist.npz"), side=28)
    assert s.card.n_images == 5856 and s.class_names == ["normal", "pneumonia"]
    assert s.card.splits == {"test": 624, "train": 4708, "val": 524}
    assert s.images.shape == (5856, 28, 28, 1)
    sub = read_imageset(shared_path("pneumoniamnist.npz"), side=32, max_images=200)
    assert len(sub) == 200 and sub.images.shape[1:] == (32, 32, 1)
    assert sub.card.class_counts["normal"] == round(200 * 1583 / 5856)
