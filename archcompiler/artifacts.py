"""Writing archc's files without losing anything of the user's.

In: a directory and the files to write into it, {name: bytes, or a function that writes the file at
the path it is given} (`write_files`), or one path and its contents (`write_file`).
Out: those files, complete, with the modes the umask gives (0644 files and 0755 directories under
umask 022).  Nothing else in the directory is touched, renamed or deleted: archc writes its own
artifacts and nothing more.  A path that cannot be written (a file where a directory must be, a
directory where a file must be, no permission) is a `UserError`.

How: each file is first written to a temporary beside it, `.NAME.archc-PID-RANDOM.tmp` (PID: the
writer's process id), then renamed over its target with os.replace, which is atomic.  `write_files`
stages every file before it renames any, so an error leaves the directory as it was: it removes the
temporaries of this call, and the directories this call created if they are still empty.  A writer
killed mid-write (SIGKILL) cannot clean up; its temporaries are swept by the next write into the same
directory once their PID is no longer alive.  A live writer's temporaries are never touched.
No torch here: `draw` uses this module.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Union

from .errors import UserError

__all__ = ["TEMP", "check_target", "write_file", "write_files"]

PathLike = Union[str, os.PathLike]
Contents = Union[bytes, Callable[[str], None]]

# The name of an archc temporary; group 1 is the PID of the process writing it.
TEMP = re.compile(r"\..+\.archc-(\d+)-[0-9a-f]{8}\.tmp")


def write_file(path: PathLike, contents: Contents) -> None:
    """Write one file atomically: `path` holds either its old contents or all of `contents`."""
    path = Path(path)
    check_target(path)  # first, for a message that names `path`, not its folder
    write_files(path.parent, {path.name: contents})


def write_files(directory: PathLike, files: Mapping[str, Contents]) -> None:
    """Write `files` into `directory` (made if missing), all or nothing."""
    directory = Path(directory)
    check_target(directory, directory=True)
    for name in files:
        check_target(directory / name)
    with _user_error(directory):
        made = list(itertools.takewhile(lambda p: not p.exists(), (directory, *directory.parents)))
    staged: list[tuple[Path, Path]] = []
    try:
        with _user_error(directory):
            os.makedirs(directory, exist_ok=True)  # mode 0o777 & ~umask, for every directory it makes
        _sweep(directory)
        for name, contents in files.items():
            tmp = directory / f".{name}.archc-{os.getpid()}-{secrets.token_hex(4)}.tmp"
            with _user_error(directory / name):
                # Not mkstemp: its files are 0600; mode 0o666 lets the umask decide, as for any file.
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            staged.append((tmp, directory / name))
            if callable(contents):
                os.close(fd)
                contents(str(tmp))  # the caller's writer: its errors are its own, passed on as they are
            else:
                with _user_error(directory / name), os.fdopen(fd, "wb") as f:
                    f.write(contents)
        for tmp, target in staged:
            with _user_error(target):
                os.replace(tmp, target)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for new in made:  # innermost first; one that is not empty (or not ours to remove) stops it
            try:
                new.rmdir()
            except OSError:
                break
        raise


def check_target(path: PathLike, *, directory: bool = False) -> None:
    """Raise UserError unless archc may write `path`: a regular file (or, with `directory`, a directory).

    `path` must not exist as another kind of thing (archc never replaces a directory by a file, a file
    by a directory, or a device), and no parent of it may be a file.
    """
    path = Path(path)
    want = "a directory" if directory else "a regular file"
    with _user_error(path):
        if path.exists() and not (path.is_dir() if directory else path.is_file()):
            raise UserError(f"{path} exists and is not {want}", hint=f"give {want}, or a path that does not exist yet")
        nearest = next((p for p in path.parents if p.exists()), None)  # what the missing part would go into
        if nearest is not None and not nearest.is_dir():
            raise UserError(f"cannot write {path}: {nearest} is not a directory")


@contextmanager
def _user_error(path: Path) -> Iterator[None]:
    """An OSError of a file operation (no permission, no space, ...) is for the user to fix: one line."""
    try:
        yield
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def _sweep(directory: Path) -> None:
    """Delete the temporaries that writers killed mid-write left in `directory`."""
    try:
        names = os.listdir(directory)
    except OSError:  # a directory we may write but not list: nothing we can see to sweep
        return
    for name in names:
        match = TEMP.fullmatch(name)
        if match and not _alive(int(match[1])):
            with suppress(OSError):  # another writer swept it first, or it is a directory: leave it
                os.unlink(directory / name)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists; signal 0 asks without sending anything."""
    if os.name != "posix":  # elsewhere os.kill terminates the process: never sweep there
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no PID can be
        return False
    except PermissionError:  # alive, and another user's
        return True
    return True
