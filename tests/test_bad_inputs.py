"""Every bad input and every corrupt shipped file: one stderr line and exit 2, or a validated
load that warns and recovers; never a traceback, an abort or a six-line box.

One table (``CASES``): a fixture builder per bad input (folders with symlink loops, a link to
``/``, non-UTF-8 names, npz files of strings, objects, negative or huge labels, score files
with words or infinities, usage errors) and per corruption of a COPY of the shipped
``artifacts/`` (``$CATSCANS_ARTIFACTS`` points at the copy; the real folder is never touched):
truncated LightGBM text, reordered features.json, an unknown method, truncated records.csv,
AUC x 100, a broken KB manifest, damaged profiles / scaler / probe / checkpoint sidecar.
Cases that must get past the shipped model to reach their check skip only when that model is
not shipped at all (no ``artifacts/models/<kb>/manifest.json``); a shipped model that does not
load fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from imagesets import REASONS
from recommender.cli import app

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "artifacts"
BOX = set("╭╮╰╯│─┃━")


# -- builders ----------------------------------------------------------------------------------
def _pngs(folder: Path, n: int, seed: int = 0, name: str = "{i}.png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / name.format(i=i))


def labelled_folder(tmp: Path) -> Path:
    """Two classes x 6 PNGs: the good part every folder case starts from."""
    root = tmp / "target"
    _pngs(root / "a", 6, 0)
    _pngs(root / "b", 6, 1)
    return root


def symlink_loops(tmp: Path) -> list[str]:
    root = labelled_folder(tmp)
    os.symlink("../a", root / "a" / "loop")  # a folder that contains itself
    os.symlink("..", root / "b" / "up")
    os.symlink("self", root / "b" / "self")  # a link to itself (ELOOP)
    os.symlink("l2", root / "l1")  # two links pointing at each other, at the class level
    os.symlink("l1", root / "l2")
    os.symlink(str(root), root / "me")  # the root inside itself: not a class
    return ["inspect", str(root), "-f", "json"]


def symlink_to_root(tmp: Path) -> list[str]:
    root = labelled_folder(tmp)
    os.symlink("/", root / "everything")
    os.symlink("/", root / "a" / "also_everything")
    return ["inspect", str(root), "-f", "json"]


def non_utf8(fmt: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        root = os.fsencode(tmp / "target")
        for cls in (b"ok", b"caf\xe9"):
            d = os.path.join(root, cls)
            os.makedirs(d)
            rng = np.random.default_rng(len(cls))
            for i in range(5):
                Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(
                    os.path.join(d, b"img\xff%d.png" % i).decode("utf-8", "surrogateescape"))
        with open(os.path.join(root, b"ok", b"notes\xfe.txt"), "w") as fh:
            fh.write("not an image")
        return ["inspect", str(tmp / "target"), "-f", fmt]
    return make


def npz(**arrays: object) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        path = tmp / "set.npz"
        np.savez(path, **arrays)
        return ["inspect", str(path), "-f", "json"]
    return make


IMG = np.random.default_rng(0).integers(0, 255, (30, 16, 16), dtype=np.uint8)
LAB = np.arange(30) % 2


def npy_named_npz(tmp: Path) -> list[str]:
    np.save(tmp / "x.npy", IMG)
    (tmp / "x.npy").rename(tmp / "x.npz")
    return ["inspect", str(tmp / "x.npz")]


def scores(kind: str, bad: object) -> Callable[[Path], list[str]]:
    """A score table for cats-scans2021 in long or wide form with one bad cell."""
    def make(tmp: Path) -> list[str]:
        recs = pd.read_csv(SHIPPED / "kb" / "cats-scans2021" / "records.csv")
        pairs = recs[["source", "target"]].drop_duplicates()
        long = pairs.assign(score=np.arange(len(pairs), dtype=float)).astype({"score": object})
        long.iloc[0, 2] = bad
        table = long if kind == "long" else long.pivot(index="source", columns="target", values="score").reset_index()
        table.to_csv(tmp / "scores.csv", index=False)
        return ["evaluate-meta", "--kb", "cats-scans2021", "--scores", str(tmp / "scores.csv")]
    return make


def argv(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: list(args)


TINY = """
name = "bad-store"
arch = "resnet-tiny"
side = 16
channels = 1
sources = ["src_a"]
targets = ["tgt_c"]
[evaluation]
mode = "folds"
repeats = 2
n_train = 30
"""


def build_matrix(*extra: str) -> Callable[[Path], list[str]]:
    """build-matrix on a toy protocol (two 60-image npz sets) with ``extra`` options."""
    def make(tmp: Path) -> list[str]:
        (tmp / "data").mkdir()
        for i, (stem, k) in enumerate([("src_a", 3), ("tgt_c", 2)]):
            rng = np.random.default_rng(i)
            np.savez(tmp / "data" / f"{stem}.npz", images=rng.integers(0, 255, (60, 16, 16), dtype=np.uint8),
                     labels=(np.arange(60) % k).astype(np.int64))
        (tmp / "p.toml").write_text(TINY)
        return ["build-matrix", "--protocol", str(tmp / "p.toml"), "--data-dir", str(tmp / "data"),
                "--run-dir", str(tmp / "run"), "-q", *extra]
    return make


# corruptions of the artifacts copy (``art``); each returns the command that loads the file
def edit(rel: str, fn: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(art: Path) -> None:
        p = art / rel
        p.write_bytes(fn(p.read_bytes()))
    return apply


def truncate(rel: str, frac: float) -> Callable[[Path], None]:
    return edit(rel, lambda b: b[: int(len(b) * frac)])


def records(kb: str, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def apply(art: Path) -> None:
        p = art / "kb" / kb / "records.csv"
        fn(pd.read_csv(p)).to_csv(p, index=False)
    return apply


def auc_x100(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df["metric"] == "roc_auc", "value"] *= 100
    return df


def text_value(df: pd.DataFrame) -> pd.DataFrame:
    df["value"] = df["value"].astype(object)
    df.loc[3, "value"] = "high"
    return df


def json_edit(rel: str, fn: Callable[[object], object]) -> Callable[[Path], None]:
    def apply(art: Path) -> None:
        p = art / rel
        p.write_text(json.dumps(fn(json.loads(p.read_text()))))
    return apply


def novelty_scale_without_novelty(doc: dict) -> dict:
    """A calibration that scales by the folder's novelty, saved without the novelty it needs."""
    for s in doc["shipped"].values():
        s["calibration"]["scale_kind"] = "novelty"
        (s["level"].get("model") or {})["novelty"] = None
    return doc


def reverse_features(doc: dict) -> dict:
    doc["main"] = list(reversed(doc["main"]))
    return doc


def unknown_methods(doc: object) -> object:
    """Every "method" value anywhere in the manifest renamed to one no registry knows."""
    if isinstance(doc, dict):
        return {k: ("no_such_method" if k == "method" and isinstance(v, str) else unknown_methods(v))
                for k, v in doc.items()}
    if isinstance(doc, list):
        return [unknown_methods(v) for v in doc]
    return doc


def first_checkpoint_sidecar(art: Path) -> None:
    side = sorted((art / "kb" / "local" / "checkpoints").glob("*.json"))[0]
    side.write_text('{"arch": "resnet-mini", "num_cl')


def recommend(kb: str | None, labelled: bool = False) -> Callable[[Path], list[str]]:
    """``recommend`` on 12 small PNGs (flat and unlabelled unless ``labelled``); kb None = default."""
    def make(tmp: Path) -> list[str]:
        if labelled:
            root = labelled_folder(tmp)
        else:
            root = tmp / "flat"
            _pngs(root, 12, 3)
        return ["recommend", "--target", str(root), *(["--kb", kb] if kb else []), "-f", "json"]
    return make


# -- the table ---------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    make: Callable[[Path], list[str]]
    says: str  # in the one error line (exit 2), or in stdout (exit 0)
    code: int = 2
    corrupt: Callable[[Path], None] | None = None
    needs_model: str | None = None  # KB whose shipped model must load to reach this check
    check: Callable[[str], None] | None = None  # more checks on stdout (exit-0 cases)
    subprocess: bool = False  # a regression here could abort the interpreter: run it apart


def classes_are(expected: dict[str, int], reasons: set[str]) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        card = json.loads(stdout)
        assert card["class_counts"] == expected
        assert reasons <= set(card["skipped_reasons"]) <= set(REASONS), card["skipped_reasons"]
    return check


CASES = [
    # inputs: folders
    Case("symlink-loops", symlink_loops, "class_counts", 0,
         check=classes_are({"a": 6, "b": 6}, {"symlinked folder", "broken symlink"})),
    Case("symlink-to-root", symlink_to_root, "class_counts", 0,
         check=classes_are({"a": 6, "b": 6}, {"symlinked folder"})),
    Case("non-utf8-names-table", non_utf8("table"), "caf\\xe9", 0),
    Case("non-utf8-names-json", non_utf8("json"), "caf\\\\xe9", 0),
    Case("non-utf8-names-csv", non_utf8("csv"), "class_counts.caf\\xe9,5", 0),
    # inputs: npz
    Case("npz-object-images", npz(images=np.array([IMG[0], "x"], dtype=object), labels=np.array([0, 1])),
         "cannot read npz"),
    Case("npz-object-labels", npz(images=IMG, labels=np.array([0, "a"] * 15, dtype=object)), "cannot read npz"),
    Case("npz-string-images", npz(images=np.full((30, 16, 16), "a"), labels=LAB), "images have dtype <U1"),
    Case("npz-string-labels", npz(images=IMG, labels=np.array(["a", "b"] * 15)), "labels must be integers"),
    Case("npz-labels-minus-one", npz(images=IMG, labels=np.where(LAB == 0, -1, 1)), "15 label(s) are negative"),
    Case("npz-label-1e9", npz(images=IMG, labels=np.where(np.arange(30) == 0, 10**9, LAB)), '"1000000000": 1', 0,
         check=lambda out: json.loads(out)["n_classes"] == 3 or pytest.fail("labels not compacted")),
    Case("npy-named-npz", npy_named_npz, "single .npy array"),
    # inputs: score tables
    Case("scores-long-text", scores("long", "high"), "non-numeric score 'high'"),
    Case("scores-long-inf", scores("long", np.inf), "infinite score 'inf'"),
    Case("scores-wide-text", scores("wide", "abc"), "non-numeric score 'abc'"),
    Case("scores-wide-minus-inf", scores("wide", -np.inf), "infinite score '-inf'"),
    # inputs: build-matrix options
    Case("store-sqlite-without-path", build_matrix("--store", "sqlite:///"), "sqlite:/// needs a file path"),
    Case("store-sqlite-unmakeable-folder", build_matrix("--store", "sqlite:////proc/nonexistent/s.db"),
         "cannot open SQLite store"),
    Case("store-folder-unmakeable", build_matrix("--store", "/proc/nonexistent/store"), "cannot create store folder"),
    Case("set-not-a-number", build_matrix("--set", "pretrain.epochs=abc", "--dry-run"), "must be a whole number"),
    # usage errors: one line, not a box
    Case("usage-unknown-option", argv("recommend", "--tpo", "3"), "No such option: --tpo"),
    Case("usage-unknown-command", argv("nosuch"), "No such command 'nosuch'"),
    Case("usage-missing-argument", argv("inspect"), "Missing argument 'path'"),
    Case("usage-bad-integer", argv("inspect", ".", "--side", "abc"), "Invalid value for '--side'"),
    Case("usage-kb-show-no-name", argv("kb", "show"), "Missing argument 'name'"),
    Case("usage-out-of-range", argv("evaluate-meta", "--kb", "x", "--trials", "0"), "Invalid value for '--trials'"),
    Case("usage-bad-choice", argv("inspect", ".", "--format", "xml"), "Invalid value for '--format'"),
    # corrupt KB files
    Case("kb-manifest-not-json", argv("kb", "show", "local"), "is not valid JSON",
         corrupt=truncate("kb/local/manifest.json", 0.5)),
    Case("kb-manifest-not-object", argv("kb", "show", "local"), "must hold a JSON object",
         corrupt=json_edit("kb/local/manifest.json", lambda d: [d])),
    Case("kb-records-truncated", argv("kb", "show", "local"), "has 80 rows but the manifest records",
         corrupt=records("local", lambda df: df.head(80))),
    Case("kb-auc-x100", argv("kb", "show", "cats-scans2021"), "outside [0, 1]",
         corrupt=records("cats-scans2021", auc_x100)),
    Case("kb-records-text-value", argv("kb", "show", "local"), "non-numeric value(s), e.g. 'high'",
         corrupt=records("local", text_value)),
    Case("kb-records-missing", argv("kb", "show", "local"), "KB file missing",
         corrupt=lambda art: (art / "kb" / "local" / "records.csv").unlink()),
    Case("kb-list-tolerates-broken-kb", argv("kb", "list", "-f", "json"), "unreadable", 0,
         corrupt=truncate("kb/local/manifest.json", 0.5)),
    Case("recommend-other-kb-despite-broken-local", recommend("juodelyte2024"), '"ranking"', 0,
         corrupt=truncate("kb/local/manifest.json", 0.5), needs_model="juodelyte2024"),
    Case("recommend-default-despite-broken-local", recommend(None), '"ranking"', 0,
         corrupt=truncate("kb/local/manifest.json", 0.5), needs_model="juodelyte2024"),
    # corrupt model files
    Case("model-manifest-not-json", recommend("juodelyte2024"), "is not valid JSON",
         corrupt=truncate("models/juodelyte2024/manifest.json", 0.3)),
    Case("model-text-truncated", recommend("juodelyte2024"), "main.txt is corrupt",
         corrupt=truncate("models/juodelyte2024/main.txt", 0.5), needs_model="juodelyte2024", subprocess=True),
    Case("model-text-cut-at-end", recommend("juodelyte2024"), "main.txt is corrupt",
         corrupt=truncate("models/juodelyte2024/main.txt", 0.999), needs_model="juodelyte2024"),
    Case("model-features-reversed", recommend("juodelyte2024"), "different order",
         corrupt=json_edit("models/juodelyte2024/features.json", reverse_features), needs_model="juodelyte2024"),
    Case("model-unknown-method", recommend("juodelyte2024"), "unknown method 'no_such_method'",
         corrupt=json_edit("models/juodelyte2024/manifest.json", unknown_methods), needs_model="juodelyte2024"),
    Case("model-novelty-scale-unknown", recommend("local"), "interval scale it cannot compute",
         corrupt=json_edit("models/local/manifest.json", novelty_scale_without_novelty), needs_model="local"),
    # corrupt meta-feature artifacts (reached after the model loads)
    Case("profile-json-truncated", recommend("juodelyte2024"), "profile",
         corrupt=truncate("profiles/pbc_blood.json", 0.4), needs_model="juodelyte2024"),
    Case("profile-npz-truncated", recommend("juodelyte2024"), "profile",
         corrupt=truncate("profiles/pbc_blood.npz", 0.5), needs_model="juodelyte2024"),
    Case("scaler-zero-sd", recommend("juodelyte2024"), "scaler",
         corrupt=json_edit("profiles/scaler.json", lambda d: {**d, "features": {k: [v[0], 0.0] for k, v in d["features"].items()}}),
         needs_model="juodelyte2024"),
    Case("probe-truncated", recommend("juodelyte2024"), "probe",  # apart: the probe is cached per process
         corrupt=truncate("probe/probe.safetensors", 0.5), needs_model="juodelyte2024", subprocess=True),
    Case("checkpoint-sidecar-truncated", recommend("local", labelled=True), "sidecar",
         corrupt=first_checkpoint_sidecar, needs_model="local"),
]


# -- running a case ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the shipped artifacts (no build folders, no Optuna studies) per module."""
    dst = tmp_path_factory.mktemp("artifacts") / "artifacts"
    for part in ("kb", "models", "probe", "profiles"):
        shutil.copytree(SHIPPED / part, dst / part, ignore=shutil.ignore_patterns("*.lock"))
    return dst


_MODEL_OK: set[str] = set()


def _model_absent(kb: str, art: Path) -> str | None:
    """Why a case needing the shipped model of ``kb`` cannot run: only that it is not shipped
    (None: it is). A shipped model that does not load fails the test here, never skips it."""
    if not (SHIPPED / "models" / kb / "manifest.json").exists():
        return f"no shipped model for KB {kb} (artifacts/models/{kb}/manifest.json absent)"
    if kb not in _MODEL_OK:
        from recommender.model import load_recommender

        try:
            load_recommender(kb, root=art / "models")
        except Exception as exc:  # noqa: BLE001 - any load failure of a shipped model is a failure
            pytest.fail(f"the shipped model of {kb} does not load before any corruption: "
                        f"{type(exc).__name__}: {exc}")
        _MODEL_OK.add(kb)
    return None


def _run(args: list[str], art: Path, in_subprocess: bool) -> tuple[int, str, str]:
    if in_subprocess:
        env = {**os.environ, "CATSCANS_ARTIFACTS": str(art), "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
        p = subprocess.run([sys.executable, "-m", "recommender", *args], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
        return p.returncode, p.stdout, p.stderr
    res = CliRunner().invoke(app, args)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(res.exception))
        pytest.fail(f"uncaught {type(res.exception).__name__} (a traceback for the user):\n{tb}")
    return res.exit_code, res.stdout, res.stderr


def _one_error_line(stderr: str) -> str:
    """The single 'error:' line of ``stderr``: the last line, the only one starting 'error:'
    (progress before it, such as 'reading …', is allowed), no traceback and no box."""
    assert "Traceback" not in stderr and not BOX & set(stderr), stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), stderr
    return errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, pristine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    art = tmp_path / "artifacts"
    shutil.copytree(pristine, art)
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(art))
    monkeypatch.setenv("CATSCANS_CACHE", str(tmp_path / "cache"))
    # kills: a shipped model that no longer loads (e.g. a broken format change) hiding as skips
    if case.needs_model and (why := _model_absent(case.needs_model, art)):
        pytest.skip(why)
    if case.corrupt is not None:
        case.corrupt(art)
    work = tmp_path / "work"
    work.mkdir()
    code, stdout, stderr = _run(case.make(work), art, case.subprocess)
    assert code == case.code, f"exit {code}\nstdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}"
    if case.code == 2:
        line = _one_error_line(stderr)
        assert case.says in line, line
    else:
        assert "Traceback" not in stderr and not [ln for ln in stderr.splitlines() if ln.startswith("error")]
        assert case.says in stdout, stdout[-2000:]
        if case.check is not None:
            case.check(stdout)


def test_unknown_kb_fails_before_the_folder_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recommender.recommend as rec

    read: list[str] = []
    monkeypatch.setattr(rec, "read_imageset", lambda *a, **k: read.append(str(a[0])) or pytest.fail("read"))
    root = labelled_folder(tmp_path)
    code, _out, err = _run(["recommend", "--target", str(root), "--kb", "nosuch"], SHIPPED, False)
    assert code == 2 and "no knowledge base 'nosuch'" in _one_error_line(err) and not read


def test_model_text_validation_catches_every_truncation() -> None:
    """Cut a shipped LightGBM text at 400 points: each cut is refused before LightGBM sees it
    (LightGBM itself aborts the interpreter on most of them)."""
    from recommender.model.model_files import model_text_problem

    raw = (SHIPPED / "models" / "juodelyte2024" / "main.txt").read_bytes()
    names = raw.split(b"feature_names=", 1)[1].split(b"\n", 1)[0].decode().split()
    assert model_text_problem(raw, names) is None
    cuts = sorted(set(np.linspace(1, len(raw.rstrip(b"\n")) - 1, 400).astype(int)))
    missed = [n for n in cuts if model_text_problem(raw[:n], names) is None]
    assert not missed, f"{len(missed)} truncations pass validation, e.g. at byte {missed[0]}"
    assert "different order" in model_text_problem(raw, names[::-1])
