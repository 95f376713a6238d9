"""Peak memory of sampling 16 frames from a 60 s 4K video (stage one's read_frames + fast preprocessing).

    python bench/memory_4k.py

Writes bench/out/uhd_60s.mp4 once (3840x2160, 25 fps, 1,500 frames, H.264 via PyAV), then measures in fresh
processes: the peak RSS (VmHWM) after the imports alone, and after read_frames(16) + preprocess_frames. Target: < 1 GiB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "bench" / "out" / "uhd_60s.mp4"

CHILD = """
import json, sys, time
import numpy as np
from pipeline.embed.encoder import load_encoder, preprocess_frames
from pipeline.decode.video import read_frames
enc = load_encoder({model!r}, "cpu")
def peak():  # VmHWM: this process's own peak (ru_maxrss would include the parent's, inherited at fork)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
before = peak()
if {measure}:
    t = time.perf_counter()
    clip = read_frames({video!r}, 16)
    pixels = preprocess_frames(clip.frames, enc)
    seconds = time.perf_counter() - t
else:
    seconds = 0.0
print(json.dumps({{"imports_mib": before, "peak_mib": peak(),
                  "seconds": seconds}}))
"""


def make_video() -> None:
    import av
    import numpy as np
    VIDEO.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = np.repeat(np.repeat(rng.integers(0, 256, (216, 384, 3), dtype=np.uint8), 10, 0), 10, 1)
    with av.open(str(VIDEO), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        for i in range(1500):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 16 * i, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if not VIDEO.exists():
        make_video()
    model = ROOT / "bench" / "out" / "tiny-clip"
    if not model.exists():
        from pipeline.embed.tiny_clip import build_tiny_clip
        build_tiny_clip(model)  # only its processor config is used here
    results = {}
    for measure in (False, True):
        code = CHILD.format(root=str(ROOT), model=str(model), video=str(VIDEO), measure=measure)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        results[measure] = json.loads(out.strip().splitlines()[-1])
    base, run = results[False]["peak_mib"], results[True]
    print(f"video: {VIDEO.name} ({VIDEO.stat().st_size / 2**20:.0f} MiB, 3840x2160, 25 fps, 60 s)")
    print(f"process after imports (torch, transformers, OpenCV)   {base:7.0f} MiB")
    print(f"peak with read_frames(16) + preprocess_frames        {run['peak_mib']:7.0f} MiB   "
          f"(+{run['peak_mib'] - base:.0f} MiB; 16 RGB 4K frames are {16 * 3840 * 2160 * 3 / 2**20:.0f} MiB)")
    print(f"time                                                  {run['seconds']:7.2f} s")
    print(f"target < 1024 MiB: {'met' if run['peak_mib'] < 1024 else 'NOT met'} ({run['peak_mib'] / 1024:.2f} of it)")


if __name__ == "__main__":
    main()
