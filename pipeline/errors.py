"""The project's own errors, and the record of a video that could not be used: callers catch a type, never a text.

Every error a user can fix (their data, settings, files) is a `UserError`, which subclasses `ValueError` as
scikit-learn's `NotFittedError` does, so code that expects a ValueError still works. The stage scripts,
`pipeline.tools.predict` and the app catch `UserError` (and the disk's `OSError`) and show its message as one line;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class UserError(ValueError):
    """A condition of the user's data, settings or files; the message names it and, where there is one, the fix."""


class ConfigError(UserError):
    """A setting (params.yaml, a command-line option) that cannot be used."""


class DataError(UserError):
    """The dataset as given cannot be used: the data root, an annotation file, a class list, the split's lists."""


class CacheError(UserError):
    """A feature cache (or a part file) that cannot be read: missing, damaged, or of another schema version."""


class HeadError(UserError):
    """A trained head that cannot be used: missing, damaged, of another format, or made for another encoder."""


class VideoError(UserError):
    """One video cannot be used. `file` is the video as the caller named it; `reason` says why, without the file."""

    def __init__(self, file: object, reason: str):
        super().__init__(f"{printable(file)}: {reason}")
        self.file, self.reason = str(file), reason

    def __reduce__(self):  # travels from the decode workers as itself
        return type(self), (self.file, self.reason)


class EmptySegment(VideoError):
    """The segment of a video asked for holds none of its frames (a gap in a sparse or damaged video)."""


class InternalError(VideoError):
    """Reading one video raised an exception the code does not expect: a bug in clip-har, not a bad video. The video
    is still skipped (the run goes on), but it is counted apart and its traceback kept (`Unusable.detail`)."""


class BrokenInstall(RuntimeError):
    """The installation cannot do the work (a module that does not import in the decode workers): every video would
    fail the same way, so the run stops. Not a UserError: its traceback is what a person needs to repair it."""


def printable(text: object) -> str:
    """`text` as one line that can neither move a terminal nor split a row: every character Python does not call
    printable (controls such as ESC, tab, newline, DEL, the C1 range; bidi and other format characters; line
    separators) is written as its escape (`\\x1b`, `\\t`, `\\n`, `\\u202e`), and a byte of a file name that is
    not UTF-8 (Python's surrogate escape) as `\\xff`. Every file name a person or a parser reads goes through it."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif "\udc80" <= ch <= "\udcff":  # os.fsdecode's stand-in for the byte 0x80-0xff
            out.append(f"\\x{ord(ch) - 0xdc00:02x}")
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def printable_all(value: object) -> object:
    """Plain data read from a file (dicts, lists, numbers, text: a cache's summary) with every string in it, keys
    too, made `printable`; Python's None, bool, int and float kept as they are, anything else (a numpy value or
    array of an HDF5 attribute) as the printable text of its str(). What a text output formats from such data."""
    if isinstance(value, dict):
        return {printable_all(k): printable_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable_all(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float)) else printable(value)


def number(value: object, kind: type, name: str, minimum: float | None = None) -> int | float:
    """Setting `name` (as params.yaml names it) as an int or float of at least `minimum`; text such as "1e-4",
    which YAML reads as a string, is taken as the number it spells. ConfigError naming the setting otherwise."""
    try:
        as_float = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # float() of a setting: the one failure it has
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or (kind is int and not as_float.is_integer()):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if minimum is not None and as_float < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {value!r}")
    return kind(as_float)


@dataclass(frozen=True)
class Unusable:
    """The result for a video that could not be used (the typed counterpart of a decoded video): which file, and
    why (`reason` never repeats the file). `str()` is the one line a person reads: `<file>: <reason>`."""

    file: str
    reason: str
    kind: type[VideoError] = field(default=VideoError, compare=False, repr=False)  # the error the reason came from
    detail: str = field(default="", compare=False, repr=False)  # an InternalError's traceback, for the bug report

    def __str__(self) -> str:
        return f"{printable(self.file)}: {self.reason}"

    def error(self) -> VideoError:
        """The same as an exception (of the kind it came from), for a caller that needs this one video."""
        return self.kind(self.file, self.reason)
