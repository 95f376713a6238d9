"""What every stage script shares: params.yaml, validated, into typed configs, and a user's error as one line.

A stage stopped by the user's data, settings (UserError) or disk (OSError) says why in one sentence; a bug keeps
its traceback."""
from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from pipeline.errors import ConfigError, UserError
from pipeline.paths import ANNOTATIONS_DIR, PARAMS
from pipeline.settings import Params, load_params


def untracked_notes(files: list[str], *folders: str) -> list[str]:
    """A note for each named file outside ANNOTATIONS_DIR and `folders`: dvc does not see it change."""
    homes = [Path(f).resolve() for f in (ANNOTATIONS_DIR, *folders)]
    return [f"{f} is outside {' and '.join([ANNOTATIONS_DIR + '/', *folders])}: `dvc repro` will not see it change "
            f"(move it into {ANNOTATIONS_DIR}/)" for f in files
            if f and not any(Path(f).resolve().is_relative_to(h) for h in homes)]


def read_params() -> Params:
    """params.yaml of the project folder (the stages run there, as dvc runs them), each section validated when the
    stage reads it (pipeline.settings: type, range, finiteness, cost bounds); ConfigError if unusable."""
    return load_params()


def config(cls, values: dict, section: str, **extra):
    """cls(**values, **extra): a stage's dataclass config from its params.yaml section; ConfigError naming a key of
    the section that the config does not know (a typo would otherwise be a TypeError traceback)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{PARAMS}: unknown key {section}.{unknown[0]} "
                         f"(known: {', '.join(sorted(known - set(extra)))})")
    return cls(**values, **extra)


def stage(name: str) -> Callable:
    """Decorate a stage's main(): the command line takes no arguments but --help (which describes the stage from
    its module docstring and touches nothing); a UserError (pipeline.errors: a condition of the user's data or
    settings, raised with a message naming the problem and the fix) or an OSError (the disk) ends the stage with
    `<name>: error: <message>` on stderr and exit status 1, never a traceback. Anything else, a plain ValueError
    from numpy or torch included, is a bug, and keeps its traceback."""
    def decorate(main: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(main)
        def run() -> None:
            if main.__module__ == "__main__":  # a command (python -m stages.x), not a call from Python
                argparse.ArgumentParser(
                    prog=f"python -m stages.{name}", description=sys.modules["__main__"].__doc__,
                    epilog=f"It takes no arguments: it reads its settings from {PARAMS} in the current folder (the "
                           "project's) and writes the outputs dvc.yaml names. Usually run by `dvc repro`, or "
                           "`dvc exp run -S key=value` to try a setting.").parse_args()
            try:
                main()
            except (UserError, OSError) as e:
                sys.exit(f"{name}: error: {e}")
        return run
    return decorate
