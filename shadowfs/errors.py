"""The one exception the filesystem's internals raise for a POSIX error.

Internal code raises ``FsError(errno.X)``; the FUSE class turns it into ``pyfuse3.FUSEError`` at
its boundary, once, so nothing below the FUSE layer imports pyfuse3 for errors.
"""

from __future__ import annotations

import errno
import os


class FsError(Exception):
    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code, detail or os.strerror(code))
        self.errno = code
        self.detail = detail

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno, str(self.errno))
        return f"{name}: {self.detail or os.strerror(self.errno)}"
