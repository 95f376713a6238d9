"""Stage one's start-up (issue 39): seconds from `python -m stages.extract` to its first video, this code against an
older checkout, alternated.

    python bench/startup.py [--rounds 3] [--baseline DIR ...] [--full] [--app]

A small project (written once under bench/out/startup/): 4 H.264 clips of 2 s at 320x240 in two class folders, 8
frames per clip, the tiny random CLIP (--full: the full ViT-B/32 architecture with random weights, the real model's
load time), the committed params.yaml otherwise (extract.backend as each checkout's default; workers auto). Each
round runs `python -m stages.extract` on a new cache once per checkout (this one, and with --baseline DIR a checkout
of older code, for example `git worktree add DIR 870e4b2`; repeat it for several), alternated, after one untimed run
each (the ONNX export and, since issue 39, the encoder's record, both made once per encoder, are not start-up).
stderr is a pseudo-terminal, so that the progress bar is drawn as it moves. The figures: when the `extract` bar
first shows (the encoder described: the run hashes its videos, then hands them to the workers); when a worker first
opens a video to decode it (issue 39's "first video decoding": the stage's process opens each video once to hash it,
before any worker may decode it, so a video's second open, seen through inotify, is its decode; each run is checked
to open each video exactly twice); when the bar first counts a video (decoded and embedded); the whole run; and the
CPU seconds the run's processes used in all (user and system, the stage's process, its workers' forkserver and the
workers: the work, which a loaded machine shares out slowly). The machine's load average is printed with them: on a
shared machine compare the ratios of one run.

--app: the app's first answer instead. In a fresh process per run (imports and all), Streamlit's AppTest opens the
Predict page of the same project (a linear head trained on its cache), waits 10 s as a user would before uploading,
then uploads a clip and presses Predict: the figure is that last script run, upload to rendered answer. Before
issue 39 the encoder loaded at the first Predict; now the page starts loading it as it opens.
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import pty
import re
import resource
import select
import shutil
import statistics
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "startup"
BAR = re.compile(rb"extract:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")
IN_OPEN = 0x20  # inotify(7): a file in a watched folder was opened
KEYS = ("bar", "decode", "first", "end", "cpu")


class Opens:
    """Counts the opens of the files in some folders (inotify; not recursive): `count[name]`."""

    def __init__(self, folders: list[Path]):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._folders = {self._libc.inotify_add_watch(self.fd, bytes(f), IN_OPEN): f for f in folders}
        if -1 in self._folders:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self.count: dict[str, int] = {}

    def read(self) -> None:
        """Take the events waiting (struct inotify_event: wd, mask, cookie, len, then the name, NUL-padded)."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        at = 0
        while at < len(data):
            wd, mask, _, size = struct.unpack_from("iIII", data, at)
            name = data[at + 16:at + 16 + size].rstrip(b"\0").decode()
            at += 16 + size
            if name and mask & IN_OPEN:  # not the folder itself
                key = str(self._folders[wd] / name)
                self.count[key] = self.count.get(key, 0) + 1

    def close(self) -> None:
        os.close(self.fd)


def make_project(full: bool) -> Path:
    """The project folder: videos, a random CLIP and params.yaml (made once per kind)."""
    from stage_one import make_clip  # run as a file from bench/ (tests/conftest.py's writer is not importable here)

    from pipeline.embed.tiny_clip import build_tiny_clip

    project = OUT / ("full" if full else "tiny")
    if not (project / "model").is_dir():
        for c in ("a", "b"):
            for i in range(2):
                make_clip(project / "data" / c / f"{c}{i}.mp4", (320, 240), 2, seed=10 * ord(c) + i)
        build_tiny_clip(project / "model", full_size=full)
    return project


def use_params(checkout: Path, project: Path) -> None:
    """The project's params.yaml: `checkout`'s own (its defaults), on this data and model, 8 frames a clip."""
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    params["data"]["root"], params["encoder"]["model"], params["extract"]["num_frames"] = "data", "model", 8
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(checkout: Path, project: Path, env: dict) -> dict:
    """One `python -m stages.extract` of `checkout` in `project` on a new cache: seconds to the bar, to a worker's
    first decode, to the bar's first video, to the end."""
    use_params(checkout, project)
    shutil.rmtree(project / "cache", ignore_errors=True)
    opens = Opens(sorted(p for p in (project / "data").iterdir() if p.is_dir()))
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # tqdm draws nothing 0 wide
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "stages.extract"], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=child, env={**env, "PYTHONPATH": str(checkout)})
    os.close(child)
    seen, bar, decode, first = b"", None, None, None
    cpu = _children_cpu()
    while True:
        ready, _, _ = select.select([main, opens.fd], [], [], 0.05)
        if opens.fd in ready:
            opens.read()
            if decode is None and any(n >= 2 for n in opens.count.values()):
                decode = time.perf_counter() - started
        if main in ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the pseudo-terminal closed: the process is gone
                chunk = b""
            if not chunk and proc.poll() is not None:
                break
            seen += chunk
            now = time.perf_counter() - started
            counts = [int(m.group(1)) for m in BAR.finditer(seen)]
            bar = bar if bar is not None or not counts else now
            first = first if first is not None or not any(counts) else now
        elif proc.poll() is not None:
            break
    end = time.perf_counter() - started
    os.close(main)
    code = proc.wait()
    _reap_orphans()
    opens.read()
    opens.close()
    if code != 0:
        raise SystemExit(f"{checkout}: stages.extract failed:\n{seen.decode(errors='replace')[-2000:]}")
    videos = sorted(str(p) for p in (project / "data").glob("*/*.mp4"))
    if decode is None or sorted(opens.count) != videos or set(opens.count.values()) != {2}:
        raise SystemExit(f"{checkout}: each video should be opened twice (hashed, then decoded), not {opens.count}: "
                         "the decode figure would be wrong")
    return {"bar": bar, "decode": decode, "first": first, "end": end, "cpu": _children_cpu() - cpu}


def _reap_orphans(timeout: float = 10.0) -> None:
    """Wait for the run's processes that outlived the stage (its forkserver, reparented here: main() makes this
    process their subreaper), so that their CPU time, and that of the workers they waited for, is counted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left
            return
        if pid == 0:
            time.sleep(0.02)


def _children_cpu() -> float:
    """User and system seconds of the processes this one waited for, and of those they waited for: the stage, its
    forkserver (an orphan reaped here) and the workers (which the forkserver reaps)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


APP_RUN = """
import sys, time
from pathlib import Path
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=600)
at.run()
assert not at.exception, at.exception
time.sleep(10.0)  # the page open for 10 s before the upload
started = time.perf_counter()
at.get("file_uploader")[0].upload("clip.mp4", Path("data/a/a0.mp4").read_bytes(), "video/mp4")
at.run()
at.button[0].click().run()
assert not at.exception and not at.error, (at.exception, at.error)
print(f"{time.perf_counter() - started:.3f}")
"""


def train_head(project: Path, env: dict) -> None:
    """A linear head on the project's cache (stage one run first), where the app looks for it."""
    from pipeline.extract.cache import read_cache
    from pipeline.heads.estimators import LinearHead, mean_pool
    from pipeline.heads.training import LinearConfig
    from pipeline.paths import HEAD_FILES

    run_stage(ROOT, project, env)
    cache = read_cache(project / "cache" / "features.h5")
    LinearHead(LinearConfig(epochs=20)).fit(mean_pool(cache.embeddings), cache.labels, cache.class_names,
                                            cache.attrs).save(project / HEAD_FILES["linear"])


def app_answer(checkout: Path, project: Path, env: dict) -> float:
    """Seconds from an upload to the rendered answer, the Predict page open for 10 s before (APP_RUN)."""
    use_params(checkout, project)
    out = subprocess.run([sys.executable, "-c", APP_RUN, str(checkout / "app" / "streamlit_app.py")], check=False,
                         cwd=project, env={**env, "PYTHONPATH": str(checkout)}, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{checkout}: the app failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", type=Path, action="append", default=[],
                    help="a checkout of older (or other) code to compare with; repeat for several")
    ap.add_argument("--full", action="store_true", help="the full ViT-B/32 architecture (random weights)")
    ap.add_argument("--app", action="store_true", help="the app's first answer, the page open for 10 s")
    args = ap.parse_args()
    ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: the stage's orphans (its forkserver) come back here
    project = make_project(args.full)
    env = {**os.environ, "CLIP_HAR_ONNX_DIR": str(OUT / "onnx"), "HF_HUB_OFFLINE": "1"}
    variants = {"this": ROOT, **{f"baseline{i or ''}": b.resolve() for i, b in enumerate(args.baseline)}}
    for name, checkout in variants.items():
        print(f"{name}: {checkout}")
    if args.app:
        train_head(project, env)
        answers: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(args.rounds):
            for name, checkout in (variants.items() if r % 2 == 0 else reversed(variants.items())):
                answers[name].append(app_answer(checkout, project, env))
                print(f"round {r + 1} {name:8s} upload to answer {answers[name][-1]:.2f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
        for name, ts in answers.items():
            print(f"{name:8s} median upload to answer: {statistics.median(ts):.2f} s")
        for name in list(variants)[1:]:
            ratio = statistics.median(b / a for a, b in zip(answers["this"], answers[name]))
            print(f"{name} / this: {ratio:.2f}x (median of the rounds' ratios)")
        return
    for checkout in variants.values():
        run_stage(checkout, project, env)  # untimed: the export, the page cache
    times: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, checkout in (variants.items() if r % 2 == 0 else reversed(variants.items())):
            t = run_stage(checkout, project, env)
            times[name].append(t)
            print(f"round {r + 1} {name:8s} bar {t['bar']:.2f} s, decode {t['decode']:.2f} s, "
                  f"first video {t['first']:.2f} s, "
                  f"end {t['end']:.2f} s, CPU {t['cpu']:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    for name, ts in times.items():
        med = {key: statistics.median(t[key] for t in ts) for key in KEYS}
        print(f"{name:8s} median: bar {med['bar']:.2f} s, decode {med['decode']:.2f} s, first video "
              f"{med['first']:.2f} s, end {med['end']:.2f} s, CPU {med['cpu']:.1f} s")
    for name in list(variants)[1:]:
        for key in KEYS:
            ratio = statistics.median(b[key] / a[key] for a, b in zip(times["this"], times[name]))
            print(f"{name} / this, {key}: {ratio:.2f}x (median of the rounds' ratios)")


if __name__ == "__main__":
    main()
