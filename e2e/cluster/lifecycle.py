"""What every long-running piece of the e2e cluster does in a `with`: start, and always close."""

from __future__ import annotations

from typing import Self


class StartedInWith:
    """`with piece:` starts it; a failed start, or leaving the block, closes what was started.

    Subclasses define start() (raising when the piece cannot come up) and close() (safe on a
    piece that started only in part)."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
