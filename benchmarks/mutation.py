"""Mutation testing of the statistical core with mutmut 3: ``make mutation``.

Run: ``.venv/bin/python benchmarks/mutation.py [--max-children 2] [--keep] [--reset-before]``.
What is mutated and which tests run are ``[tool.mutmut]`` in pyproject.toml (the fast tests that
exercise each module; slow end-to-end tests are deselected there, since mutmut re-runs every
test that touches a mutated function once per mutant). This script

1. removes ``mutants/`` (unless ``--keep``: then mutmut reuses its cached verdicts),
2. runs ``mutmut run`` (its log goes to ``mutants/mutmut-run.log``),
3. reads mutmut's verdicts (``mutants/<module>.meta``) and, for every mutant not killed, its
   diff (mutmut's ``show``), and
4. writes ``artifacts/mutation.json`` and prints one line per module.

``artifacts/mutation.json``: per module ``killed, survived, timeout, no_tests, suspicious,
segfault, not_checked, total``, ``score`` = (killed + timeout) / total, ``equivalent`` (how many
survivors are known equivalent), ``score_non_equivalent`` = (killed + timeout) / (total −
equivalent), and ``surviving``: each survivor's mutant name, function, source line and the
diff line(s). Top-level ``before`` keeps the per-module scores of the first run (the baseline;
``--reset-before`` makes this run the baseline), ``equivalent`` maps each equivalent survivor to
why it is equivalent (from ``benchmarks/mutation_equivalent.json``, matched on module, function
and the changed lines, not on mutmut's per-function numbering), and ``run`` says how it ran.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "artifacts" / "mutation.json"
EQUIVALENT = REPO / "benchmarks" / "mutation_equivalent.json"

# mutmut's exit-code -> status table (mutmut.stats.status_by_exit_code, 3.x); others: suspicious
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no_tests", 33: "no_tests", 34: "skipped",
          35: "suspicious", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout",
          255: "timeout", -11: "segfault", -9: "segfault", 2: "interrupted", 37: "type_check",
          None: "not_checked"}
COUNTS = ("killed", "survived", "timeout", "no_tests", "suspicious", "segfault", "not_checked")


def _config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]


def _mutmut_bin() -> list[str]:
    exe = Path(sys.executable).with_name("mutmut")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from mutmut.__main__ import cli; cli()"]


def run_mutmut(max_children: int, keep: bool) -> float:
    """``mutmut run``; returns its wall time in seconds. Exits when mutmut fails."""
    mutants = REPO / "mutants"
    if not keep and mutants.exists():
        subprocess.run(["rm", "-rf", str(mutants)], check=True)
    mutants.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONHASHSEED="0")
    log = mutants / "mutmut-run.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(_mutmut_bin() + ["run", "--max-children", str(max_children)],
                            cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text(errors="replace")[-4000:]
        sys.exit(f"mutmut run failed (exit {rc}); the end of {log}:\n{tail}")
    return wall


def _function_spans(path: Path) -> dict[str, tuple[int, int]]:
    """'func' / 'Class.method' -> (first, last) source line."""
    spans = {}
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            spans[node.name] = (node.lineno, node.end_lineno)
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                    spans[f"{node.name}.{sub.name}"] = (sub.lineno, sub.end_lineno)
    return spans


def _function_of(mutant: str) -> str:
    """'recommender.x.mod.xǁCls.methǁ__mutmut_3' -> 'Cls.meth'; '...x_func__mutmut_3' -> 'func'."""
    last = mutant.rpartition(".")[2].partition("__mutmut_")[0]
    if "ǁ" in last:
        parts = [p for p in last.split("ǁ") if p]
        return ".".join(parts[1:]) if parts and parts[0] == "x" else ".".join(parts)
    return last[2:] if last.startswith("x_") else last


def _diff(mutant: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant  # mutmut's own `show`

    try:
        return get_diff_for_mutant(mutant, path=path)
    except Exception:  # noqa: BLE001 - fall back to the CLI
        out = subprocess.run(_mutmut_bin() + ["show", mutant], cwd=REPO, capture_output=True, text=True)
        return "\n".join(ln for ln in out.stdout.splitlines() if not ln.startswith("# "))


def _changed(diff: str) -> tuple[list[str], list[str]]:
    lines = [ln for ln in diff.splitlines() if not ln.startswith(("---", "+++", "@@"))]
    return ([ln[1:].strip() for ln in lines if ln.startswith("-")],
            [ln[1:].strip() for ln in lines if ln.startswith("+")])


def _equivalents() -> list[dict]:
    return json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else []


def _why_equivalent(module: str, function: str, removed: list[str], added: list[str],
                    known: list[dict]) -> str | None:
    for e in known:
        if (e["module"] == module and e["function"] == function and e["from"] == " ".join(removed)
                and e["to"] == " ".join(added)):
            return e["why"]
    return None


def collect(modules: list[str]) -> tuple[dict, dict]:
    """Per module: counts, scores and survivors; and {mutant: why} for the equivalent ones."""
    os.chdir(REPO)  # mutmut's helpers read pyproject.toml and mutants/ relative to the cwd
    known = _equivalents()
    result, equivalent = {}, {}
    for mod in modules:
        meta = REPO / "mutants" / f"{mod}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        counts = dict.fromkeys(COUNTS, 0)
        spans = _function_spans(REPO / mod)
        src = (REPO / mod).read_text().splitlines()
        surviving = []
        for name, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
            status = STATUS.get(code, "suspicious")
            status = status if status in counts else "suspicious"
            counts[status] += 1
            if status in ("killed", "timeout"):
                continue
            diff = _diff(name, mod)
            removed, added = _changed(diff)
            func = _function_of(name)
            lo, hi = spans.get(func, (1, len(src)))
            line = next((i + 1 for i in range(lo - 1, hi) if removed and src[i].strip() == removed[0]), None)
            entry = {"mutant": name, "status": status, "function": func, "line": line,
                     "diff": [f"- {r}" for r in removed] + [f"+ {a}" for a in added]}
            why = _why_equivalent(mod, func, removed, added, known) if status == "survived" else None
            if why:
                entry["equivalent"] = why
                equivalent[name] = why
            surviving.append(entry)
        total = sum(counts.values())
        n_eq = sum(1 for s in surviving if "equivalent" in s)
        caught = counts["killed"] + counts["timeout"]
        result[mod] = counts | {
            "total": total, "score": round(caught / total, 4) if total else None,
            "equivalent": n_eq,
            "score_non_equivalent": round(caught / (total - n_eq), 4) if total > n_eq else None,
            "surviving": surviving}
    return result, equivalent


def _natural(name: str) -> tuple[str, int]:
    head, _, n = name.rpartition("__mutmut_")
    return head, int(n) if n.isdigit() else 0


def _brief(stats: dict) -> dict:
    return {k: stats[k] for k in ("killed", "survived", "timeout", "no_tests", "total", "score")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-children", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--keep", action="store_true", help="keep mutants/ (mutmut reuses cached verdicts)")
    ap.add_argument("--no-run", action="store_true", help="only re-read mutants/ and rewrite the JSON")
    ap.add_argument("--reset-before", action="store_true", help="make this run the 'before' baseline")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)

    cfg = _config()
    modules = list(cfg["only_mutate"])
    wall = None if a.no_run else run_mutmut(a.max_children, a.keep)
    stats, equivalent = collect(modules)

    old = json.loads(a.out.read_text()) if a.out.exists() else {}
    if a.no_run and wall is None:
        wall = old.get("run", {}).get("wall_s")
    before = old.get("before") if old.get("before") and not a.reset_before else {
        m: _brief(s) for m, s in stats.items()}
    import mutmut

    doc = stats | {
        "before": before,
        "equivalent": equivalent,
        "run": {"wall_s": None if wall is None else round(wall, 1),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "mutmut": getattr(mutmut, "__version__", "3"), "max_children": a.max_children,
                "cpus": os.cpu_count(), "tests": cfg.get("pytest_add_cli_args_test_selection", []),
                "score": "(killed + timeout) / total; score_non_equivalent excludes the equivalent survivors"},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")

    w = max(len(m) for m in modules)
    print(f"{'module':<{w}}  killed survived timeout no_tests  total  score  (before)  non-equiv")
    for m in modules:
        s, b = stats[m], before.get(m, {})
        fmt = lambda v: "   —" if v is None else f"{100 * v:5.1f}%"  # noqa: E731
        print(f"{m:<{w}}  {s['killed']:6d} {s['survived']:8d} {s['timeout']:7d} {s['no_tests']:8d} "
              f"{s['total']:6d} {fmt(s['score'])}  ({fmt(b.get('score'))})  {fmt(s['score_non_equivalent'])}")
    print(f"wall time of mutmut run: {wall:.0f} s" if wall is not None else "wall time: not run")
    print(f"wrote {a.out.relative_to(REPO) if a.out.is_relative_to(REPO) else a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
