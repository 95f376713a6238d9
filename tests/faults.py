"""A test-only decoder for the worker pool: it segfaults, hangs or eats memory on files named for it."""
import errno
import os
import signal
import sys
import time

import numpy as np

from pipeline.decode.workers import load_video


def faulty_decode(file: str, cfg, hash_bytes: bool = True):
    """Segfaults on files named crash* (or starting with b"crash!"), sleeps an hour on hang* (or b"hang!!"),
    allocates 1 TiB on hog*, raises an exception no reader expects on bug* (a bug in the code), else decodes
    normally.

    locked.mp4 fails as a file without read permission fails for every user but root (the tests run as root).
    """
    name = os.path.basename(file)
    with open(file, "rb") as f:
        head = f.read(6)  # an upload's name is never used: uploads say what to do in their first bytes
    name = {b"crash!": "crash", b"hang!!": "hang"}.get(head, name)
    if name == "locked.mp4" and os.geteuid() == 0:
        raise PermissionError(errno.EACCES, "Permission denied", file)
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("hog"):
        np.ones(2**40, np.uint8)
    if name.startswith("bug"):
        {}["a key the code forgot"]  # a KeyError, as a bug in a reader would raise
    return load_video(file, cfg, hash_bytes)


DOOMED_NODE = "CLIP_HAR_TEST_DOOMED_NODE"  # set (to 1) on a test Ray node that is removed during the run


def doomed_node_decode(file: str, cfg, hash_bytes: bool = True, marks: str = ""):
    """On the node whose environment sets DOOMED_NODE: writes `marks/<video name>` and never returns (the test
    removes the node while the video is in flight). Elsewhere: waits until some video is in flight there, so that
    one always is, then decodes normally. Use functools.partial(doomed_node_decode, marks=...)."""
    if os.environ.get(DOOMED_NODE):
        open(os.path.join(marks, os.path.basename(file)), "w").close()
        time.sleep(3600)
    while not os.listdir(marks):
        time.sleep(0.05)
    return load_video(file, cfg, hash_bytes)


def gated_decode(file: str, cfg, hash_bytes: bool = True, gate: str = "", slots: int = 0):
    """Decodes the first `slots` videos to arrive (each takes a slot file in folder `gate`, whatever the process),
    then never returns on any other: a run that stops after exactly `slots` videos, in any order.
    Use functools.partial(gated_decode, gate=..., slots=...)."""
    for slot in range(slots):
        try:
            os.close(os.open(os.path.join(gate, f"slot-{slot}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return load_video(file, cfg, hash_bytes)
        except FileExistsError:
            continue
    time.sleep(3600)


def broken_install_decode(file: str, cfg, hash_bytes: bool = True):
    """As if the decoder's library were missing on a node: every video fails with an ImportError."""
    raise ImportError("No module named 'av' (a test decoder)")


def modules_decode(file: str, cfg, hash_bytes: bool = True) -> list[str]:
    """Not a decoder: the project's modules the worker has imported (what a worker starts with, and no more)."""
    return sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "stages"))
