"""The decode workers measured on the CPU: decode throughput by number of workers, the per-video cost of a worker
and the pool's start-up, stage one end to end with 0 and 2 workers, and the peak memory of a run (the process and
its workers) over a 4K clip and two memory bombs.

    python bench/workers.py [--videos 16] [--full-rounds 2]

Videos: 10 s 1280x720 H.264 clips made with bench/stage_one.py's make_clip, under the names its 720p_10s set uses
(bench/out/videos/720p_10s/), 40 tiny 1 s 64x48 H.264 clips, a 3 s 3840x2160 clip, a single-frame 16000x16000
H.264 and a 16000x1 FFV1 mkv, all written once under bench/out/. 16 frames per video, FrameSpec(224, 224, 224),
batch 16. Encoders: the tiny random CLIP (decoding is nearly all the work) and the full ViT-B/32 architecture with
random weights (the real model's speed; its weights cannot be downloaded here). Every figure comes from this one
run; what is compared alternates (the machines drift by up to 30% between processes), and each timing comes with
the cores that other processes used meanwhile ("others", from /proc/stat less this process tree's CPU time): the
machine is shared.

The memory run (4.) runs the real stage, stages.extract, in a child process (through runpy, as `python -m` does),
so its workers start as in production: each re-runs the parent's main module.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from stage_one import BATCH, FRAMES, OUT, VIDEOS, full_size_clip, make_clip  # noqa: E402
from pipeline.errors import Unusable  # noqa: E402
from pipeline.extract.runner import ExtractConfig, extract_features  # noqa: E402
from pipeline.embed.tiny_clip import build_tiny_clip  # noqa: E402
from pipeline.decode.frames import FrameSpec  # noqa: E402
from pipeline.decode.workers import DecodePool, PoolConfig, ReadConfig  # noqa: E402

SPEC = FrameSpec(224, 224, 224)
READ = ReadConfig(FRAMES, SPEC)
TINY_VIDEOS = 40
MIB = 2**20


# --- the videos -------------------------------------------------------------------------------------------------

def clips_720p(n: int) -> list[Path]:
    """n 10 s 1280x720 clips: bench/stage_one.py's 720p_10s set (its six), extended with the same generator."""
    files = [VIDEOS / "720p_10s" / f"720p_10s_{i}.mp4" for i in range(n)]
    for i, f in enumerate(files):
        if not f.exists():
            make_clip(f, (1280, 720), 10, seed=1000 + i)
    return files


def write_frames(path: Path, codec: str, frames, size: tuple[int, int], pix_fmt: str = "yuv420p", fmt=None,
                 options=None, in_format: str = "rgb24") -> Path:
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    with av.open(str(tmp), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=25, options=options or {})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        for img in frames:
            frame = img if isinstance(img, av.VideoFrame) else av.VideoFrame.from_ndarray(img, format=in_format)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


def tiny_clips() -> list[Path]:
    """TINY_VIDEOS clips of 1 s (25 frames) at 64x48: decoding them is nearly free."""
    files = [OUT / "workers_tiny" / f"t{i:02d}.mp4" for i in range(TINY_VIDEOS)]
    for i, f in enumerate(files):
        if not f.exists():
            rng = np.random.default_rng(i)
            base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            write_frames(f, "libx264", (np.roll(base, k, axis=1) for k in range(25)), (64, 48),
                         options={"preset": "ultrafast"})
    return files


def uhd_clip(path: Path, seconds: int = 3) -> Path:
    """3840x2160, 25 fps: blocky random texture scrolling (as bench/memory_4k.py), ultrafast preset."""
    if not path.exists():
        rng = np.random.default_rng(0)
        base = np.repeat(np.repeat(rng.integers(0, 256, (216, 384, 3), dtype=np.uint8), 10, 0), 10, 1)
        write_frames(path, "libx264", (np.roll(base, 16 * i, axis=1) for i in range(25 * seconds)), (3840, 2160),
                     options={"preset": "ultrafast"})
    return path


def huge_h264(path: Path) -> tuple[Path, int]:
    """One flat grey frame as large as libx264 takes, from 16000x16000 down (tens of KB: CABAC codes flat
    macroblocks in almost nothing)."""
    import av
    for side in (16000, 12000, 9600):
        if path.exists():
            with av.open(str(path)) as c:
                return path, c.streams.video[0].codec_context.width
        frame = av.VideoFrame(side, side, "yuv420p")
        for plane in frame.planes:
            np.frombuffer(plane, np.uint8)[:] = 128
        try:
            write_frames(path, "libx264", [frame], (side, side),
                         options={"preset": "ultrafast", "threads": "1", "x264-params": "cabac=1:rc-lookahead=0"})
        except Exception as e:  # noqa: BLE001  (an encoder refusing the size: try the next one)
            print(f"   libx264 refused {side}x{side}: {e}")
    raise RuntimeError("libx264 took no frame size above 8K")


def sliver(path: Path, width: int = 16000, height: int = 1) -> Path:
    """Five grey frames of 16000x1 in FFV1 (FFV1 refuses a width of 1, so it is wide, not tall)."""
    if not path.exists():
        write_frames(path, "ffv1", (np.full((height, width), 40 * i, np.uint8) for i in range(5)), (width, height),
                     pix_fmt="gray", fmt="matroska", in_format="gray")
    return path


def tiny_clip_model() -> Path:
    path = OUT / "tiny-clip"
    if not (path / "config.json").exists():
        build_tiny_clip(path)
    return path


# --- other processes: these machines are shared, and what else runs there is measured with each timing --------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores; /proc/stat, less idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def _own_cpu() -> float:
    """CPU seconds of this process and everything it started (reaped children included, live ones read from /proc)."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for pid in _descendants(os.getpid()):
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


def adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (PR_SET_CHILD_SUBREAPER), so that the CPU time of a
    child's forkserver and workers, which outlive the child, is counted as this run's and not as other processes'."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_orphans(keep: set[int]) -> None:
    """Wait for (and reap) every child of this process that is not in `keep`: a finished child's leftovers."""
    me = os.getpid()
    for pid, ppid in _descendants(me).items():
        if ppid == me and pid not in keep:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def own_children() -> set[int]:
    me = os.getpid()
    return {pid for pid, ppid in _descendants(me).items() if ppid == me}


class Others:
    """Times a block (.seconds) and the cores other processes used meanwhile on average (.cores, out of all)."""

    def __enter__(self) -> Others:
        self._busy, self._own, self._t = _machine_busy(), _own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t
        other = (_machine_busy() - self._busy) - (_own_cpu() - self._own)
        self.cores = max(other, 0.0) / self.seconds


# --- 1 and 2: the pool alone ------------------------------------------------------------------------------------

def decode_rate(files: list[Path], workers: int) -> tuple[float, float]:
    """(videos/s of DecodePool.map (hash + decode + resize/crop + transfer) with the pool already started, cores
    used meanwhile by other processes)."""
    names = [str(f) for f in files]
    with DecodePool(PoolConfig(workers=workers)) as pool:
        list(pool.map(names[:max(workers, 1)], READ))  # warm-up: the workers started, the files in the page cache
        with Others() as others:
            out = list(pool.map(names, READ))
    bad = [r for r in out if isinstance(r, Unusable)]
    assert not bad, bad
    return len(files) / others.seconds, others.cores


def overhead(files: list[Path], workers: int) -> tuple[float, float]:
    """(seconds from DecodePool() to the first result, seconds per video once started) on `files`."""
    names = [str(f) for f in files]
    t = time.perf_counter()
    with DecodePool(PoolConfig(workers=workers)) as pool:
        first = next(pool.map(names[:1], READ))
        startup = time.perf_counter() - t
        t = time.perf_counter()
        out = list(pool.map(names, READ))
        per_video = (time.perf_counter() - t) / len(files)
    assert not isinstance(first, Unusable) and not any(isinstance(r, Unusable) for r in out), (first, out)
    return startup, per_video


FRESH = """
import sys, time
from pipeline.decode.frames import FrameSpec
from pipeline.decode.workers import DecodePool, PoolConfig, ReadConfig
t = time.perf_counter()
with DecodePool(PoolConfig(workers=1)) as pool:
    first = next(pool.map([{file!r}], ReadConfig(16, FrameSpec(224, 224, 224))))
    print(time.perf_counter() - t)
"""


def startup_fresh_process(file: Path) -> float:
    """DecodePool() to the first result (1 worker) as the first pool of a fresh process: what a run pays once."""
    out = subprocess.run([sys.executable, "-c", FRESH.format(root=str(ROOT), file=str(file))],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


# --- 3: stage one end to end ------------------------------------------------------------------------------------

def link_data(files: list[Path]) -> Path:
    """A fresh data folder holding `files` as links, in two class folders."""
    root = OUT / "workers_stage_data"
    shutil.rmtree(root, ignore_errors=True)
    for i, f in enumerate(files):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"c{i % 2}" / f.name).symlink_to(f)
    return root


def stage_one(files: list[Path], model: Path, workers: int) -> tuple[float, float]:
    """(seconds for stage one on a fresh cache over `files` (linked into two class folders), cores used meanwhile by
    other processes)."""
    root = link_data(files)
    cache = OUT / "workers_stage_cache" / "features.h5"
    shutil.rmtree(cache.parent, ignore_errors=True)
    cfg = ExtractConfig(root=str(root), cache_path=str(cache), model=str(model), num_frames=FRAMES, batch_size=BATCH,
                        device="cpu", workers=workers)
    with Others() as others:
        summary = extract_features(cfg, progress=False)
    assert summary.encoded == len(files) and not summary.skipped, summary
    return others.seconds, others.cores


# --- 4: memory of the whole run ---------------------------------------------------------------------------------

# The real stage (`python -m stages.extract`, so the workers re-import what they do in production), then the
# process's own VmHWM (it starts afresh at exec; ru_maxrss would carry the parent's).
STAGE = """
import json, runpy, sys
sys.argv = ["stages.extract"]
try:
    runpy.run_module("stages.extract", run_name="__main__", alter_sys=True)
except SystemExit as e:
    print(f"exit: {e}")
print("VmHWM_kB", next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
"""


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM", "VmRSS", "PPid")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return {}
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration, PermissionError):
        return 0


def _descendants(root: int) -> dict[int, int]:
    """pid -> parent pid of every live process under `root` (root included)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                parent[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    tree, todo = {root: parent.get(root, 0)}, [root]
    while todo:
        pid = todo.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in tree:
                tree[child] = pid
                todo.append(child)
    return tree


def _role(pid: int, ppid: int, root: int, roles: dict[int, str]) -> str:
    if pid == root:
        return "parent"
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmd = ""
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "forkserver" in cmd and ppid == root and not any(r == "forkserver" for r in roles.values()):
        return "forkserver"
    if roles.get(ppid) == "forkserver":
        return "worker"
    return "other"


def stage_folder(data: Path, model: Path, workers: int) -> Path:
    """A fresh working folder whose params.yaml is the project's with data.root, encoder.model, the workers, the CPU,
    batch 16 and a cache of its own."""
    import yaml
    work = OUT / "workers_stage_run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"], params["encoder"]["model"] = str(data), str(model)
    params["extract"].update(cache_path=str(work / "cache" / "features.h5"), workers=workers, device="cpu",
                             batch_size=BATCH, num_frames=FRAMES)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


def stage_fresh(files: list[Path], model: Path, workers: int) -> tuple[float, float, float]:
    """Stage one as `python -m stages.extract` runs it, in a fresh process (so a fresh forkserver too): (seconds
    extract_features took, as the stage prints them; seconds of the whole process, imports included; cores used
    meanwhile by other processes)."""
    work = stage_folder(link_data(files), model, workers)
    keep = own_children()
    with Others() as others:
        out = subprocess.run([sys.executable, "-c", STAGE], cwd=work, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, check=True).stdout
        reap_orphans(keep)  # its forkserver and resource tracker, which exit after it
    line = next(line for line in out.splitlines() if " encoded, " in line)
    assert f": {len(files)} encoded, 0 reused, 0 skipped" in line, out
    return float(re.search(r" in ([0-9.]+) s$", line).group(1)), others.seconds, others.cores


def memory_run(data: Path, model: Path, workers: int, hz: float = 20.0) -> dict:
    """Run stages.extract over `data` in a child process, polling the process tree's VmHWM, VmRSS and PSS at hz."""
    work = stage_folder(data, model, workers)
    keep = own_children()
    proc = subprocess.Popen([sys.executable, "-c", STAGE], cwd=work, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_hwm: dict[int, int] = {}
    roles: dict[int, str] = {}
    max_rss_total = max_pss_total = polls = 0
    t = time.perf_counter()
    while proc.poll() is None:
        tree = _descendants(proc.pid)
        rss_total = pss_total = 0
        for pid, ppid in tree.items():
            st = _status(pid)
            if not st:
                continue
            if pid not in roles:
                roles[pid] = _role(pid, ppid, proc.pid, roles)
            peak_hwm[pid] = max(peak_hwm.get(pid, 0), st.get("VmHWM", 0))
            rss_total += st.get("VmRSS", 0)
            pss_total += _pss_kb(pid)
        max_rss_total, max_pss_total = max(max_rss_total, rss_total), max(max_pss_total, pss_total)
        polls += 1
        time.sleep(1 / hz)
    seconds = time.perf_counter() - t
    stdout, stderr = proc.communicate()
    reap_orphans(keep)
    if proc.returncode:
        raise RuntimeError(f"stages.extract failed:\n{stdout}\n{stderr}")
    own = [line for line in stdout.splitlines() if line.startswith("VmHWM_kB")]
    if own:  # the parent's exact peak, read by itself at the very end
        peak_hwm[proc.pid] = max(peak_hwm.get(proc.pid, 0), int(own[-1].split()[1]))
    by_role: dict[str, list[int]] = {}
    for pid, kb in peak_hwm.items():
        by_role.setdefault(roles.get(pid, "other"), []).append(kb)
    return {"by_role_mib": {r: [kb / 1024 for kb in v] for r, v in by_role.items()},
            "sum_mib": sum(peak_hwm.values()) / 1024, "max_rss_total_mib": max_rss_total / 1024,
            "max_pss_total_mib": max_pss_total / 1024, "polls": polls, "seconds": seconds,
            "summary": [line for line in stdout.splitlines() if not line.startswith("VmHWM_kB")]}


# --- the run ----------------------------------------------------------------------------------------------------

def load() -> str:
    """The machine's load averages (1, 5, 15 min): other processes on these shared 2-core machines skew timings."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=16, help="10 s 720p clips for 1. and 3.")
    parser.add_argument("--full-rounds", type=int, default=2, help="rounds of 0 vs 2 workers with ViT-B/32")
    args = parser.parse_args()
    import torch
    adopt_orphans()
    started = time.perf_counter()
    files, tiny = clips_720p(args.videos), tiny_clips()
    tiny_model, full_model = tiny_clip_model(), full_size_clip()
    mem_data = OUT / "workers_memory_data"
    uhd_clip(mem_data / "uhd" / "uhd_3s.mp4")
    huge, side = huge_h264(mem_data / "bombs" / "huge.mp4")
    sliver(mem_data / "bombs" / "sliver.mkv")
    print(f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); {len(files)} clips "
          f"of 10 s 1280x720 H.264, {len(tiny)} of 1 s 64x48; videos and models ready in "
          f"{time.perf_counter() - started:.0f} s; {load()}")

    # 1. decode only, by number of workers, alternating (0, 1, 2 then 2, 1, 0)
    counts = (0, 1, 2)
    rates: dict[int, list[tuple[float, float]]] = {w: [] for w in counts}
    for order in (counts, counts[::-1]):
        for w in order:
            rates[w].append(decode_rate(files, w))
    best = {w: max(r for r, _ in v) for w, v in rates.items()}
    print(f"\n1. decode only, DecodePool.map over {len(files)} clips (hash + 16 frames + resize/crop + transfer; "
          f"pool started), best of 2; {load()}:")
    for w in counts:
        print(f"   {w} workers: {best[w]:.2f} videos/s ({best[w] / best[0]:.2f}x 0 workers; rounds "
              f"{', '.join(f'{r:.2f} [others {c:.2f} cores]' for r, c in rates[w])})")

    # 2. per-video cost of a worker on tiny videos, and the pool's start-up
    startups: dict[int, list[float]] = {w: [] for w in counts}
    per_video: dict[int, list[float]] = {w: [] for w in counts}
    with Others() as others2:
        for order in (counts, counts[::-1]):
            for w in order:
                s, p = overhead(tiny, w)
                startups[w].append(s)
                per_video[w].append(p)
    fresh = startup_fresh_process(tiny[0])
    pv = {w: min(v) for w, v in per_video.items()}
    print(f"\n2. per video on {len(tiny)} tiny clips (1 s, 64x48; best of 2): in-process {pv[0] * 1e3:.1f} ms, "
          f"1 worker {pv[1] * 1e3:.1f} ms, 2 workers {pv[2] * 1e3:.1f} ms; others {others2.cores:.2f} cores")
    print(f"   a worker's cost per video (1 worker - in-process: scheduling, pickling, 2.4 MB of frames through a "
          f"pipe): {(pv[1] - pv[0]) * 1e3:.1f} ms")
    print("   pool start-up, DecodePool() to the first result (tiny clip), a later pool in the same process, both "
          "rounds: " + "; ".join(f"{w} workers {', '.join(f'{s:.2f}' for s in startups[w])} s" for w in counts[1:])
          + f" (in-process first result: {min(startups[0]):.3f} s)")
    print(f"   the first pool of a fresh process (its forkserver starts too), 1 worker: {fresh:.2f} s")

    # 3. stage one end to end: the tiny encoder (decode-bound), 0 vs 2 workers alternating, then ViT-B/32
    tiny_t: dict[int, list[tuple[float, float]]] = {0: [], 2: []}
    for order in ((0, 2), (2, 0)):
        for w in order:
            tiny_t[w].append(stage_one(files, tiny_model, w))
    full_t: dict[int, list[tuple[float, float]]] = {0: [], 2: []}
    for r in range(args.full_rounds):
        for w in ((0, 2) if r % 2 == 0 else (2, 0)):
            full_t[w].append(stage_one(files, full_model, w))
    n = len(files)

    def fastest(t: dict[int, list[tuple[float, float]]], w: int) -> float:
        return min(s for s, _ in t[w])

    ratio_tiny = fastest(tiny_t, 0) / fastest(tiny_t, 2)
    ratio_full = fastest(full_t, 0) / fastest(full_t, 2)
    print(f"\n3. stage one end to end, {n} clips, fresh cache, batch {BATCH}, CPU (best of runs; pool start-up "
          f"included; {load()})")
    for name, t, ratio in (("tiny random CLIP (decode-bound)", tiny_t, ratio_tiny),
                           ("ViT-B/32, random weights (the real model's speed)", full_t, ratio_full)):
        print(f"   {name}: 0 workers {fastest(t, 0):.2f} s ({n / fastest(t, 0):.2f} videos/s), 2 workers "
              f"{fastest(t, 2):.2f} s ({n / fastest(t, 2):.2f} videos/s): {ratio:.2f}x")
        for w in (0, 2):
            print(f"      runs with {w} workers: " + ", ".join(f"{x:.2f} s [others {c:.2f} cores]" for x, c in t[w]))
    print(f"   target: tiny encoder >= 1.6x faster with 2 workers: {'met' if ratio_tiny >= 1.6 else 'NOT met'} "
          f"({ratio_tiny:.2f}x)")

    # 3b. the same (tiny encoder) as a fresh `python -m stages.extract` would run it: its forkserver starts too
    fresh_t: dict[int, list[tuple[float, float, float]]] = {0: [], 2: []}
    for order in ((0, 2), (2, 0)):
        for w in order:
            fresh_t[w].append(stage_fresh(files, tiny_model, w))
    best_fresh = {w: min(x for x, _, _ in v) for w, v in fresh_t.items()}
    ratio_fresh = best_fresh[0] / best_fresh[2]
    print(f"   tiny encoder in a fresh process each time (stages.extract; its time as printed, imports excluded): "
          f"0 workers {best_fresh[0]:.1f} s, 2 workers {best_fresh[2]:.1f} s: {ratio_fresh:.2f}x")
    for w in (0, 2):
        print(f"      runs with {w} workers: " + ", ".join(f"{x:.1f} s (process {p:.1f} s) [others {c:.2f} cores]"
                                                      for x, p, c in fresh_t[w]))

    # 4. memory of a whole run with 2 workers: a 4K clip and two memory bombs
    mem = memory_run(mem_data, tiny_model, workers=2)
    roles = mem["by_role_mib"]
    workers_mib = roles.get("worker", [])
    print(f"\n4. peak memory, stages.extract (tiny encoder, 2 workers) over a 3 s 3840x2160 clip, a {side}x{side} "
          f"single-frame H.264 ({huge.stat().st_size / 1024:.0f} KiB) and a 16000x1 FFV1 mkv; VmHWM polled at 20 Hz "
          f"({mem['polls']} polls, {mem['seconds']:.1f} s; {load()})")
    for line in mem["summary"]:
        print(f"   {line.strip()}")
    print(f"   parent {max(roles.get('parent', [0])):.0f} MiB; workers {', '.join(f'{m:.0f}' for m in workers_mib)} MiB "
          f"(max {max(workers_mib, default=0):.0f}); forkserver {sum(roles.get('forkserver', [0])):.0f} MiB; "
          f"resource tracker {sum(roles.get('resource tracker', [0])):.0f} MiB; other "
          f"{sum(roles.get('other', [0])):.0f} MiB")
    print(f"   whole run: sum of every process's peak {mem['sum_mib']:.0f} MiB (an upper bound: shared pages counted "
          f"in each); largest simultaneous RSS total {mem['max_rss_total_mib']:.0f} MiB, PSS total "
          f"{mem['max_pss_total_mib']:.0f} MiB")
    print(f"   target < 2048 MiB for the whole run: {'met' if mem['sum_mib'] < 2048 else 'NOT met'} "
          f"({mem['sum_mib'] / 2048:.2f} of it, sum of peaks)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s; {load()}")
    print(json.dumps({"decode_videos_s": rates, "tiny_per_video_s": per_video, "startup_s": startups,
                      "startup_fresh_process_s": fresh, "stage_tiny_s": tiny_t, "stage_full_s": full_t, "stage_fresh_tiny": fresh_t,
                      "memory": {k: v for k, v in mem.items() if k != "summary"}}, default=float))


if __name__ == "__main__":
    main()
