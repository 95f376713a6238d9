"""A test-only decoder for the worker pool: it segfaults, hangs or eats memory on files named for it."""
import errno
import os
import signal
import time

import numpy as np

from pipeline.workers import load_video


def faulty_decode(file: str, cfg, hash_bytes: bool = True):
    """Segfaults on files named crash* (or starting with b"crash!"), sleeps an hour on hang* (or b"hang!!"),
    allocates 1 TiB on hog*, else decodes normally.

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
    return load_video(file, cfg, hash_bytes)
