"""Mutation testing of the code that decides results: mutmut over one module at a time, against the
test files that cover it (bench/mutation.toml).

    python -m bench.mutation [--modules nets/loss.py ...] [--jobs 2] [--work /tmp/mutation] [--again | --survivors]

For each module, a copy of the tracked tree goes to ``WORK/<module>/``, with mutmut set there to mutate
that module alone and to run the module's test files (a mutant meets only the tests that call the
mutated function). Each module's counts go to ``WORK/results.json`` as it finishes, so that an
interrupted run goes on where it stopped (``--again`` redoes finished modules); the survivors' diffs
go to ``WORK/<module>/survivors.txt``. Prints JSON: per module the mutants, killed (a timeout counts
as killed, as mutmut counts it), survived (``no tests`` included: no test calls the function),
equivalent (the survivors that bench/mutation.toml explains), and the score, killed over the mutants
that are not equivalent. Minutes per module, so never in CI; the table lives in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import tomllib  # Python 3.11 on (as mutmut itself)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KILLED = {"killed", "timeout", "caught by type check"}
# what the tests import besides nets/ and utils/ (mutmut copies it into its mutants/ folder unmutated)
ALSO_COPY = ["train.py", "eval.py", "predict.py", "export.py", "tools", "bench", "configs", "model_data", "VOCdevkit"]


def read_map(path: Path = HERE / "mutation.toml") -> tuple[dict[str, list[str]], dict[str, str]]:
    """The module -> test files map, and the equivalent mutants (name -> why)."""
    data = tomllib.loads(path.read_text())
    return data["modules"], data.get("equivalent", {})


def mutmut_config(module: str, tests: list[str]) -> str:
    """The ``[tool.mutmut]`` section for one module."""
    lines = ["", "[tool.mutmut]", 'source_paths = ["nets", "utils"]', f"only_mutate = {json.dumps([module])}",
             f"also_copy = {json.dumps(ALSO_COPY)}", f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
             'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]',
             # torch's thread pools do not survive a fork from a process that used them
             'process_isolation = "forkserver"', ""]
    return "\n".join(lines)


def copy_tree(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the checkout, as they are now, into ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def statuses(work: Path) -> dict[str, str]:
    """mutmut's verdict per mutant name, from ``mutmut results --all``."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, capture_output=True,
                         text=True, check=True).stdout
    pairs = (line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)
    return {name: status for name, status in pairs}


def mutmut_run(work: Path, jobs: int, mutants: list[str], log_name: str) -> float:
    """``mutmut run`` in ``work`` (all mutants, or those named), its output to ``work/log_name``; its seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # jobs share the cores
    t0 = time.monotonic()
    with open(work / log_name, "w") as log:
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *mutants], cwd=work, env=env,
                       stdout=log, stderr=subprocess.STDOUT, check=False)
    return round(time.monotonic() - t0, 1)


def run_module(module: str, tests: list[str], work: Path, jobs: int) -> dict:
    """mutmut over ``module`` in a fresh copy under ``work``; each mutant's verdict."""
    marker = work / ".bench-mutation"  # what this script made, and so may remove
    if work.exists():
        if not marker.is_file():
            raise SystemExit(f"error: {work} exists and was not made by bench/mutation.py; give another --work")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    marker.touch()
    copy_tree(work)
    with open(work / "pyproject.toml", "a") as f:
        f.write(mutmut_config(module, tests))
    seconds = mutmut_run(work, jobs, [], "mutmut.log")
    return {"module": module, "tests": tests, "seconds": seconds, "verdicts": statuses(work)}


def rerun_survivors(entry: dict, work: Path, jobs: int) -> dict:
    """The module's survivors tested again against the checkout's tests as they are now (copied into ``work``); the
    mutants are those of the first run (a change to the module itself needs a full run: ``--again``)."""
    for dest in (work / "tests", work / "mutants" / "tests"):
        shutil.copytree(ROOT / "tests", dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    survivors = sorted(n for n, s in entry["verdicts"].items() if s not in KILLED)
    seconds = mutmut_run(work, jobs, survivors, "mutmut_survivors.log")
    return {**entry, "verdicts": statuses(work), "survivors_rerun_seconds": seconds}


def summary(entry: dict, equivalent: dict[str, str], work: Path | None = None) -> dict:
    """A module's counts from its verdicts, the equivalent mutants as bench/mutation.toml has them now; with
    ``work``, each survivor's diff (and why, where equivalent) to ``work/survivors.txt``."""
    verdicts = entry["verdicts"]
    survivors = sorted(n for n, s in verdicts.items() if s not in KILLED)
    eq = sum(n in equivalent for n in survivors)
    killed = len(verdicts) - len(survivors)
    if work is not None:
        with open(work / "survivors.txt", "w") as f:
            for name in survivors:
                diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, capture_output=True,
                                      text=True).stdout
                f.write(f"# equivalent: {equivalent[name]}\n{diff}\n" if name in equivalent else f"{diff}\n")
    by_status = dict(Counter(verdicts.values()))
    return {"module": entry["module"], "mutants": len(verdicts), "killed": killed, "survived": len(survivors) - eq,
            "equivalent": eq, "score": round(killed / max(len(verdicts) - eq, 1), 3), "by_status": by_status,
            "seconds": entry["seconds"], "survivors": [n for n in survivors if n not in equivalent]}


def table(results: list[dict]) -> str:
    """The Markdown table for bench/README.md."""
    rows = ["| module | mutants | killed | survived | equivalent | score |", "| --- | --- | --- | --- | --- | --- |"]
    rows += [f"| `{r['module']}` | {r['mutants']} | {r['killed']} | {r['survived']} | {r['equivalent']} | {r['score']:.0%} |"
             for r in results]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    modules, equivalent = read_map()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=list(modules), help="modules of bench/mutation.toml (default: all)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="mutants tested at once")
    parser.add_argument("--work", default="/tmp/mutation", help="where the copies and results.json go")
    parser.add_argument("--again", action="store_true", help="redo modules that results.json already has (else their "
                        "counts are only recomputed, with bench/mutation.toml's equivalents as they are now)")
    parser.add_argument("--survivors", action="store_true", help="test a finished module's survivors again, against "
                        "the tests as they are now (after new tests; the module's code unchanged)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in modules]
    if unknown:
        raise SystemExit(f"error: not in bench/mutation.toml: {', '.join(unknown)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    done_path = work / "results.json"

    def read_done() -> dict:
        return json.loads(done_path.read_text()) if done_path.is_file() else {}

    done = read_done()
    for module in args.modules:
        folder = work / module.replace("/", "_")
        if module in done and args.survivors:
            print(f"{module}: its survivors against the tests as they are now", file=sys.stderr, flush=True)
            done[module] = rerun_survivors(done[module], folder, args.jobs)
        elif module in done and not args.again:
            print(f"{module}: done before ({done[module]['seconds']} s), not run again", file=sys.stderr)
        else:
            print(f"{module}: mutmut against {', '.join(modules[module])}", file=sys.stderr, flush=True)
            done[module] = run_module(module, modules[module], folder, args.jobs)
        entry = done[module]
        done = read_done() | {module: entry}  # another run (another module) may have written since
        tmp = done_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=1))
        tmp.replace(done_path)
        print(json.dumps(summary(done[module], equivalent, folder)), file=sys.stderr, flush=True)
    results = [summary(done[m], equivalent) for m in modules if m in done]
    print(json.dumps({"bench": "mutation", "modules": results, "table": table(results)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
