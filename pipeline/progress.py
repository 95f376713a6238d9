"""Progress bars on stderr: tqdm's on a terminal, plain periodic lines (no carriage return, no cursor move) in a log."""
from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

LOG_INTERVAL_S = 10.0  # seconds between two lines in a log (and the first and last line)
LOG_COLUMNS = 100  # a log's line width: tqdm's width of the bar and its figures


class LineBar(tqdm):
    """tqdm writing each update as a whole line (ASCII bar, no `\\r` or cursor movement), for stderr that is not a
    terminal: a log shows the progress as lines, LOG_INTERVAL_S apart. A bar that is cleared at the end
    (leave=False) writes nothing then."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        text = self.__str__() if msg is None else msg
        if not text:  # tqdm clearing the bar: nothing to clear in a log
            return False
        self.fp.write(text + "\n")
        self.fp.flush()
        self._shown = self.n
        return True

    def close(self) -> None:
        # tqdm's close writes the last state and then "\n" (or clears the bar): the last state is a line here,
        # unless the last line already said it
        kept = self.leave or (self.leave is None and self.pos == 0)
        if not self.disable and kept and getattr(self, "_shown", None) != self.n:
            self.display()
        self.leave = False
        super().close()


def progress_bar(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """tqdm(iterable, **kwargs) on stderr: a live bar when stderr is a terminal, else a LineBar (plain lines every
    LOG_INTERVAL_S). kwargs: tqdm's (total, unit, desc, disable, leave)."""
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    return LineBar(iterable, mininterval=LOG_INTERVAL_S, ascii=True, ncols=LOG_COLUMNS, **kwargs)
