"""May I write this path? One answer for every command, and the safe way to write it.

- ``input_files``: every local file the inputs really read: symlinks resolved, the sources of a
  VRT (and of VRTs inside it), GDAL's sidecars (``.aux.xml``, ``.ovr``, ``.msk``...).
- ``check_output_path``: the output is not an input (by any of those names, or a hard link to
  one), is not a folder, does not exist unless overwrite/resume allows it, and its folder is
  writable (created when missing).
- ``atomic_output``: write to a unique temporary file in the target's folder, rename it onto the
  target when complete, remove it on any error. Files get the mode the umask gives, like any
  other file the user creates.
- ``OutputLock``: one run at a time per output (an advisory ``flock`` on ``.NAME.lock``), so two
  runs never splice their work into one file.
- ``write_error``: turn ``OSError`` / ``RasterioIOError`` raised while writing into one line that
  names the file (and, on a full disk, the free space and the space needed).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from geoclass.errors import (
    ConfigError,
    DiskFullError,
    GeoclassError,
    OutputBusyError,
    OutputError,
    OutputExistsError,
)

__all__ = [
    "InputFile",
    "OutputLock",
    "atomic_output",
    "check_output_path",
    "format_bytes",
    "free_bytes",
    "input_files",
    "is_disk_full",
    "is_io_error",
    "temp_path",
    "write_error",
]

_VRT_MAGIC = b"<VRTDataset"
_SIDECARS = (".aux.xml", ".ovr", ".msk", ".aux")
_SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg")
NEARLY_FULL_BYTES = 8 << 20


def _umask() -> int:
    mask = os.umask(0o022)  # read once at import, before any thread: os.umask can only be read by setting it
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@dataclass(frozen=True)
class InputFile:
    """A file an input reads.

    Attributes:
        path: The file, symlinks resolved.
        role: What the user gave, for messages: ``scene``, ``model``, ``labels``...
        given: The path the user gave that reads it.
    """

    path: Path
    role: str
    given: str

    def describe(self) -> str:
        """``/d/scene.tif, which scene.vrt reads (the input scene)`` for messages."""
        via = "" if os.path.abspath(self.given) == str(self.path) else f", which {self.given} reads"
        return f"{self.path}{via} (the input {self.role})"


_NETWORK_PREFIXES = (
    "/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsihdfs", "/vsiwebhdfs",
    "http://", "https://", "ftp://", "s3://", "gs://", "az://",
)
_CONTAINER_PREFIXES = ("/vsizip/", "/vsigzip/", "/vsitar/", "/vsi7z/", "/vsirar/")


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, as hex: identifies an input (a model, labels) in a record."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_network(path: str) -> bool:
    """A file on a server: never one geoclass can overwrite."""
    return path.startswith(_NETWORK_PREFIXES)


def _local_container(name: str) -> str | None:
    """The local file behind a GDAL virtual path (``/vsizip/a.zip/x.tif``, ``/vsisubfile/o_n,a.tif``)."""
    if name.startswith("/vsisubfile/"):
        rest = name.split(",", 1)[1] if "," in name else ""
        return _local_container(rest) or rest or None
    for prefix in _CONTAINER_PREFIXES:
        if name.startswith(prefix):
            inner = name[len(prefix) - 1 :]  # keep the leading "/"
            inner = inner.removeprefix("{").split("}", 1)[0] if inner.startswith("/{") else inner
            parts = inner.split("/")
            for end in range(len(parts), 1, -1):  # the longest prefix that is a file is the archive
                candidate = "/".join(parts[:end])
                if os.path.isfile(candidate):
                    return candidate
                nested = _local_container(candidate)
                if nested:
                    return nested
    return None


def _is_vrt(path: Path) -> bool:
    if path.suffix.lower() == ".vrt":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(64).lstrip().startswith(_VRT_MAGIC)
    except OSError:
        return False


def _gdal_files(path: str) -> list[str]:
    """GDAL's file list of a raster (itself, its sources one level down, sidecars); [] if unreadable."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return list(ds.files)
    except (RasterioError, OSError):
        return []


def input_files(paths: Iterable[str | os.PathLike[str]], role: str, *, raster: bool = True) -> list[InputFile]:
    """Every local file that reading ``paths`` touches.

    Args:
        paths: What the user gave.
        role: What they are, for messages (``scene``, ``model``, ``labels``).
        raster: Ask GDAL for the files of each raster (VRT sources, recursively, and sidecars).

    Returns:
        The files, each once, symlinks resolved; through GDAL connection strings (``vrt://``,
        ``/vsisubfile/``, ``/vsizip/``...) too. Files on servers (``/vsicurl/``, URLs) are left out.
    """
    found: dict[Path, InputFile] = {}
    for given in paths:
        given = os.fspath(given)
        todo = [given]
        asked: set[str] = set()
        while todo:
            name = todo.pop()
            if _is_network(name) or name in asked:
                continue
            asked.add(name)
            if not os.path.exists(name):
                # A GDAL connection string (vrt://a.tif?bands=1, /vsisubfile/..., /vsizip/...):
                # the files it reads, as GDAL lists them, and the archive behind it.
                container = _local_container(name)
                if container:
                    todo.append(container)
                if raster and (name.startswith("/vsi") or "://" in name):
                    todo.extend(f for f in _gdal_files(name) if f != name)
                continue
            real = Path(os.path.realpath(name))
            if real in found:
                continue
            found[real] = InputFile(real, role, given)
            if real.suffix.lower() == ".shp":  # a shapefile is read from its sidecars too
                todo.extend(str(Path(name).with_suffix(ext)) for ext in _SHAPEFILE_PARTS)
            if not raster or not real.is_file():
                continue
            if name == given or _is_vrt(real):
                todo.extend(f for f in _gdal_files(name) if f != name)
            else:  # a source of a VRT: its sidecars by name, without opening every source
                todo.extend(f"{name}{ext}" for ext in _SIDECARS)
    return list(found.values())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    allow_existing: bool = False,
    inputs: Iterable[InputFile] = (),
    kind: str = "output",
) -> Path:
    """Check that an output can be written without harm; create its folder when missing.

    Args:
        path: The output file.
        overwrite: An existing file may be replaced.
        allow_existing: Do not complain about an existing file (e.g. when resuming).
        inputs: Files the run reads (``input_files``); the output must be none of them.
        kind: What the output is, for messages (``map``, ``preview``...).

    Raises:
        ConfigError: The output is one of the inputs (by path, symlink, VRT source or hard link).
        OutputExistsError: ``path`` exists and neither flag allows it.
        OutputError: ``path`` is a folder, or its folder cannot be created or written to.
    """
    path = Path(path)
    real = Path(os.path.realpath(path))
    for item in inputs:
        if real == item.path or _same_file(path, item.path):
            raise ConfigError(
                f"{path}: the {kind} would replace {item.describe()}; write it to another file"
            )
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected an output file name")
    if path.exists() and not (overwrite or allow_existing):
        raise OutputExistsError(f"{path}: already exists (pass --overwrite to replace it)")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the folder {parent} ({exc.strerror or exc})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: the folder {parent} is not writable")
    return path


def temp_path(target: str | os.PathLike[str], tag: str = "tmp") -> Path:
    """A unique hidden file name beside ``target`` that keeps its extension (GDAL picks drivers by it)."""
    target = Path(target)
    return target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.{tag}{target.suffix}")


@contextmanager
def atomic_output(target: str | os.PathLike[str], *, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` when the block succeeds.

    On any error (Ctrl-C included) the temporary file is removed and ``target`` is left as it was.
    ``OSError`` and rasterio I/O errors become one-line ``OutputError``s naming ``target``.
    """
    target = Path(target)
    tmp = temp_path(target)
    try:
        yield tmp
        if tmp.is_file():  # some writers (safetensors) create 0600 files
            os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, GeoclassError) or not is_io_error(exc):
            raise
        raise write_error(exc, target, needed_bytes) from exc


class OutputLock:
    """An exclusive advisory lock on an output, held for the whole run.

    The lock file ``.NAME.lock`` beside the output records the holder's process id; it is removed
    on release. A second run asking for the same output fails at once instead of waiting.
    """

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        self.path = self.target.with_name(f".{self.target.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        """Take the lock.

        Raises:
            OutputBusyError: Another process holds it.
            OutputError: The lock file cannot be created.
        """
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise OutputError(f"{self.target}: cannot create the lock file {self.path.name} "
                                  f"({exc.strerror or exc})") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise OutputError(f"{self.target}: cannot lock {self.path.name} ({exc.strerror or exc})") from exc
                who = f" (process {holder})" if holder else ""
                raise OutputBusyError(
                    f"{self.target}: another geoclass run{who} is writing it; wait for it to finish "
                    "or choose another output"
                ) from None
            # The holder before us may have removed the file after we opened it: lock the file
            # that is there now, not an orphan.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:  # e.g. a full disk: let go of the lock, leave no file behind
            self.release()
            raise write_error(exc, self.target) from exc
        return self

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


# --- write errors -----------------------------------------------------------------------------


def is_io_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an operating-system or GDAL I/O error (not a geoclass one)."""
    if isinstance(exc, OSError):
        return True
    from rasterio._err import CPLE_BaseError  # GDAL errors rasterio lets through (no public name)
    from rasterio.errors import RasterioError

    return isinstance(exc, (RasterioError, CPLE_BaseError))


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk or a quota is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        text = str(exc).lower()
        if "no space left" in text or "disk quota" in text or "file too large" in text:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KB`` (powers of 1000, as disk sizes are sold)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def write_error(
    exc: BaseException, target: str | os.PathLike[str], needed_bytes: int | None = None, hint: str = ""
) -> OutputError:
    """One-line error for a failed write of ``target``.

    Args:
        exc: What the write raised.
        target: The output being written.
        needed_bytes: About how much the output needs (an upper bound is fine), for a full disk.
        hint: What to do next, appended after ``;`` (e.g. how to resume).

    Returns:
        ``DiskFullError`` on a full disk or quota, else ``OutputError``.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    tail = f"; {hint}" if hint else ""
    free = free_bytes(folder)
    # libtiff's "No space left on device" goes to GDAL's log only; the exception says "Write
    # error at scanline N". Such a write failing on a (nearly) full disk is a full disk.
    errno_known = isinstance(exc, OSError) and exc.errno is not None
    if is_disk_full(exc) or (not errno_known and free is not None and free < NEARLY_FULL_BYTES):
        have = f"{format_bytes(free)} free" if free is not None else "no space left"
        need = f", the output needs up to {format_bytes(needed_bytes)}" if needed_bytes else ""
        return DiskFullError(f"{target}: the disk is full ({have} in {folder}{need}); "
                             f"free some space or write elsewhere{tail}")
    text = " ".join(str(exc).split())
    reason = getattr(exc, "strerror", None) or (text[:200] if text else type(exc).__name__)
    return OutputError(f"{target}: cannot be written ({reason}){tail}")
