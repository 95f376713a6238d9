"""The decode workers' forkserver: what it imports once, and starting it first thing (the standard library only)."""
from __future__ import annotations

import multiprocessing
import sys
from types import ModuleType

# What every worker imports before its memory limit is set (PyAV loads av.subtitles.stream lazily, at the first
# open; torch resizes): imported once by the forkserver too, so that a worker starts in milliseconds.
WORKER_IMPORTS = ("av.subtitles.stream", "PIL.Image", "torch", "torch.nn.functional")
WORKERS_MODULE = "pipeline.decode.workers"  # the workers' own code (DecodePool's tasks and _worker_init)


def start_forkserver(preload: tuple[str, ...] = ()) -> None:
    """Start this process's forkserver now, as the first DecodePool would with `preload`: a stage that calls this
    first thing has the server import the workers' modules (torch, the encoder's: seconds) while it imports and
    reads its own, instead of after. Later pools fork from it (their own preload is then not imported). Importing
    this module imports nothing else: the stage calls it before its own imports."""
    from multiprocessing import forkserver

    set_preload(multiprocessing.get_context("forkserver"), preload)
    forkserver.ensure_running()


def set_preload(ctx, preload: tuple[str, ...]) -> None:
    """What the forkserver imports once, so that a worker starts in milliseconds: the workers' own imports, and the
    main module's package and imports (every worker re-runs the main module, as multiprocessing does to unpickle what
    it defines, and finds its imports already there: main_module)."""
    ctx.set_forkserver_preload([WORKERS_MODULE, *WORKER_IMPORTS, *preload, *main_module()])


def main_module() -> list[str]:
    """What the forkserver preloads for the main module when it was run by name (python -m stages.extract): its
    package and the modules it imports, not the module itself: each worker re-runs it by name (multiprocessing does,
    to unpickle what it defines), and runpy warns when the module is already imported ('found in sys.modules'); its
    imports found there keep that re-run to milliseconds. None when it was run as a file or a package's __main__
    (multiprocessing does not re-run those by name)."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if not name or name == "__main__" or name.endswith(".__main__"):
        return []
    used = {v.__name__ if isinstance(v, ModuleType) else getattr(v, "__module__", None) for v in vars(main).values()}
    used.add(name.rpartition(".")[0])
    return sorted(m for m in used if isinstance(m, str) and m in sys.modules and m not in (name, "__main__"))
