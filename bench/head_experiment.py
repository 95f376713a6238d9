"""Benchmark of a head experiment on the demo: `dvc exp run -S train.lr=...` (train and evaluate re-run), and where
its time goes.

    python bench/head_experiment.py [--rounds 3] [--project bench/out/head-experiment] [--baseline DIR]

The project is made once in --project (the tracked files copied, git and DVC initialised, the tiny random CLIP
built, `dvc exp run -S encoder.model=models/tiny-clip`: minutes) and reused after, with this checkout's code copied
into it on each run (`--baseline`, a copy of such a project, keeps the code it has: the before of a change). Then:
1. the experiment end to end, each run with a learning rate never used before (so train and evaluate re-run),
   alternately with the same in --baseline when given;
2. the breakdown: `dvc exp run` with nothing to re-run (DVC's own overhead), each stage's start-up (its imports),
   and each stage alone;
3. evaluate's parts in this process, alternately on the same data: the refits of cross-validation and of the
   data-efficiency curve (one at a time, against all at once: pipeline.heads.training.train_linear trains K heads in one
   loop), and logistic regression's refits with OpenBLAS's default threads against one thread.

Run it with the package importable (`pip install -e .`, or PYTHONPATH=. from the checkout).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# dvc with ruamel.yaml's C parser hidden (ruamel.yaml falls back to its Python parser)
PURE_YAML_DVC = [sys.executable, "-c", "import sys; sys.modules['_ruamel_yaml'] = None; from dvc.cli import main; "
                 "sys.exit(main(sys.argv[1:]))"]


def sh(*cmd: str, cwd: Path) -> float:
    """Run a command in cwd, fail loudly, return its wall time in seconds."""
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - start


def make_project(project: Path) -> None:
    """The demo as a new user makes it offline, in its own folder (a git and DVC repository)."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project / name)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    sh("git", "init", "-q", cwd=project)
    sh(*git, "add", "-A", cwd=project)
    sh(*git, "commit", "-qm", "copy", cwd=project)
    sh(sys.executable, "-m", "pipeline.embed.encoder", "--tiny", "models/tiny-clip", cwd=project)
    print("making the demo project (dvc exp run -S encoder.model=models/tiny-clip) ...", flush=True)
    sh(sys.executable, "-m", "dvc", "exp", "run", "-S", "encoder.model=models/tiny-clip", cwd=project)
    sh(*git, "add", "-A", cwd=project)
    sh(*git, "commit", "-qm", "demo", cwd=project)


def sync_code(project: Path) -> None:
    """Copy this checkout's code and dvc.yaml into the project when they differ, and bring the project up to date
    (the stages that changed re-run here, untimed): the runs then time this code."""
    files = subprocess.run(["git", "ls-files", "pipeline", "stages", "dvc.yaml", ".dvc/config", ".dvc/plots"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    changed = [f for f in files if (ROOT / f).is_file() and (
        not (project / f).is_file() or (project / f).read_bytes() != (ROOT / f).read_bytes())]
    for name in changed:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    if changed:
        print(f"code copied into {project}: {', '.join(changed)}; dvc exp run (untimed) ...", flush=True)
        sh(sys.executable, "-m", "dvc", "exp", "run", cwd=project)


def median(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f} s" + (f" (min {min(xs):.2f}, max {max(xs):.2f})" if len(xs) > 1 else "")


def evaluate_parts(project: Path, rounds: int) -> None:
    """Evaluate's refits, old way and new way alternately, in this process."""
    os.chdir(project)
    import numpy as np
    from threadpoolctl import threadpool_limits

    from pipeline.extract.cache import open_cache
    from pipeline.heads.evaluate import cross_validate, data_efficiency
    from pipeline.heads.estimators import mean_pool
    from pipeline.heads.logreg import LogRegConfig
    from pipeline.heads.kinds import fit_predict_many
    from pipeline.heads.kinds import load_head
    from pipeline.paths import CACHE_PATH, HEAD_FILES, SPLIT_PATH
    from pipeline.heads.split_file import read_split
    from pipeline.heads.training import LinearConfig
    from stages import config, read_params

    import torch
    torch.set_num_threads(1)  # stage two's thread policy (pipeline.threads)
    params = read_params()
    cfg = config(LinearConfig, params["train"], "train")
    logreg_cfg = config(LogRegConfig, params["baseline"], "baseline")
    cache = open_cache(CACHE_PATH)
    x, y, names = mean_pool(cache.embeddings), cache.labels, cache.class_names
    parts = read_split(SPLIT_PATH, cache.paths)
    frames = np.asarray(cache.embeddings)
    text = load_head(HEAD_FILES["zeroshot"]).text_
    shots, seed, c = params["evaluate"]["shots"], params["split"]["seed"], len(names)

    def one_at_a_time(config_, text_init=None):
        return lambda tasks: [fit_predict_many([task], c, config_, text_init)[0] for task in tasks]

    def linear_refits(old: bool):
        zs = replace(cfg, head="mean")
        many = (lambda cf, t=None: one_at_a_time(cf, t)) if old else (
            lambda cf, t=None: lambda tasks: fit_predict_many(tasks, c, cf, t))
        cross_validate(x, y, names, params["evaluate"]["folds"], seed, many(cfg))
        data_efficiency(frames, y, parts, {"linear": many(cfg), "zeroshot_init": many(zs, text)}, shots, seed)

    def logreg_refits(threads: int | None):
        with threadpool_limits(threads):
            pooled = lambda tasks: fit_predict_many(  # noqa: E731 (the frames of the data-efficiency subsets)
                [(mean_pool(a), b, mean_pool(q)) for a, b, q in tasks], c, logreg_cfg)
            cross_validate(x, y, names, params["evaluate"]["folds"], seed,
                           lambda tasks: fit_predict_many(tasks, c, logreg_cfg))
            data_efficiency(frames, y, parts, {"logreg": pooled}, shots, seed)

    times = {k: [] for k in ("old", "new", "blas default", "blas 1")}
    for _ in range(rounds):
        for key, fn in (("old", lambda: linear_refits(True)), ("new", lambda: linear_refits(False)),
                        ("blas default", lambda: logreg_refits(None)), ("blas 1", lambda: logreg_refits(1))):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    refits = params["evaluate"]["folds"] + 2 * (len([s for s in shots if s < 14]) + 1)
    print(f"\nevaluate's linear refits ({refits}: {params['evaluate']['folds']} folds, linear and zero-shot-started "
          f"on each data-efficiency subset; {cfg.epochs} epochs each), in this process:")
    print(f"  one at a time (train_linear, K=1) {median(times['old'])}")
    print(f"  all at once (train_linear, K)     {median(times['new'])}   "
          f"{statistics.median(times['old']) / statistics.median(times['new']):.1f}x faster")
    print("logistic regression's refits (cross-validation and data efficiency):")
    print(f"  OpenBLAS default threads         {median(times['blas default'])}")
    print(f"  one BLAS thread (threadpoolctl)  {median(times['blas 1'])}   "
          f"{statistics.median(times['blas default']) / statistics.median(times['blas 1']):.1f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--project", default=str(ROOT / "bench" / "out" / "head-experiment"))
    parser.add_argument("--baseline", metavar="DIR", help="another demo project (say, with older code) whose "
                        "experiment is timed alternately with this one's")
    args = parser.parse_args()
    project = Path(args.project)
    if not (project / "models" / "linear.pt").is_file():
        shutil.rmtree(project, ignore_errors=True)
        make_project(project)
    sync_code(project)
    dvc = [sys.executable, "-m", "dvc"]
    py = sys.executable
    times: dict[str, list[float]] = {}
    # a learning rate never used before for each run: a new experiment, which train and evaluate really re-run
    # (a value run before can come back from DVC's run cache)
    fresh = iter(f"{1e-4 * (1 + (time.time_ns() % 10 ** 6) / 10 ** 6 + i / 1000):.9f}" for i in range(10 ** 6))
    for r in range(args.rounds):
        runs = ((Path(args.baseline), "baseline"), (project, "exp")) if args.baseline else ((project, "exp"),)
        for where, key in runs:
            times.setdefault(key, []).append(sh(*dvc, "exp", "run", "-S", f"train.lr={next(fresh)}", cwd=where))
        # the same without ruamel.yaml.clib (requirements.txt): DVC then parses dvc.yaml and dvc.lock in Python
        times.setdefault("pure yaml", []).append(sh(*PURE_YAML_DVC, "exp", "run", "-S", f"train.lr={next(fresh)}",
                                                    cwd=project))
        times.setdefault("noop", []).append(sh(*dvc, "exp", "run", cwd=project))
        for stage in ("train", "evaluate"):
            times.setdefault(f"import {stage}", []).append(sh(py, "-c", f"import stages.{stage}", cwd=project))
            times.setdefault(stage, []).append(sh(py, "-m", f"stages.{stage}", cwd=project))
        times.setdefault("python", []).append(sh(py, "-c", "pass", cwd=project))
    load = os.getloadavg()
    print(f"head experiment on the demo (140 videos, 7 classes, tiny random CLIP), {args.rounds} rounds, "
          f"{len(os.sched_getaffinity(0))} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}:")
    print(f"dvc exp run -S train.lr=...            {median(times['exp'])}   (train + evaluate re-run)")
    if args.baseline:
        print(f"  the same in {args.baseline}      {median(times['baseline'])}   (alternately: "
              f"{statistics.median(times['baseline']) / statistics.median(times['exp']):.2f}x this code's time)")
    print(f"  without ruamel.yaml.clib             {median(times['pure yaml'])}   (alternately: "
          f"{statistics.median(times['pure yaml']) / statistics.median(times['exp']):.2f}x; DVC parses its YAML in "
          "Python)")
    print(f"  dvc exp run, nothing to re-run       {median(times['noop'])}   (DVC's own overhead)")
    for stage in ("train", "evaluate"):
        print(f"  python -m stages.{stage:<9}          {median(times[stage])}")
        print(f"    of which start-up (imports)        {median(times[f'import {stage}'])}   "
              f"(python alone {statistics.median(times['python']):.2f} s)")
    evaluate_parts(project, args.rounds)


if __name__ == "__main__":
    main()
