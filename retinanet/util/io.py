"""Atomic file writes: a reader sees the previous file or the new one, never half of one.

Every file the package writes goes through ``atomic_write``: the content goes to a temporary
file in the target's folder (the same file system, so the final rename is atomic), is flushed
and fsynced, then renamed onto the target with ``os.replace``. On any failure, Ctrl-C included,
the temporary file is removed and the previous file is left as it was.

The new file gets the permissions a plain ``open(path, "w")`` would give it, 0o666 less the
process umask, so teammates sharing the folder can read it (``tempfile.mkstemp`` would make it
0o600, readable by its owner only).
"""
import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil

_WRITE_MODES = ("w", "wb")


class WriteError(OSError):
    """A file could not be written: a full disk, no permission, a folder in the way, a path through a
    regular file. ``str()`` names the file, the reason and the space left; ``path``, ``reason`` and
    ``free_bytes`` (None when unknown) are kept for callers that say more."""

    def __init__(self, path, reason, error_number=None):
        self.path, self.reason, self.free_bytes = path, reason, free_space(path)
        free = f"; {self.free_bytes / 1e6:.0f} MB free there" if self.free_bytes is not None else ""
        super().__init__(f"could not write {path}: {reason}{free}")
        self.errno = error_number

    @classmethod
    def from_os_error(cls, path, error):
        if isinstance(error, WriteError):
            return error
        return cls(path, os_error_reason(path, error), error.errno)


def os_error_reason(path, error):
    """Why writing ``path`` failed with the OSError ``error``: the regular file in the way of its
    folder, named, or the system's reason (a full disk, no permission)."""
    if isinstance(error, NotADirectoryError) or error.errno == errno.ENOTDIR:
        return f"{nearest_existing(os.path.dirname(os.path.abspath(path)))} is a file, not a folder"
    return error.strerror or str(error)


def nearest_existing(path):
    """``path`` or the nearest of its parents that exists (a file or a folder)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def free_space(path):
    """Bytes free on the file system that would hold ``path``; None when that cannot be told."""
    try:
        existing = nearest_existing(path)
        return shutil.disk_usage(existing if os.path.isdir(existing) else os.path.dirname(existing)).free
    except OSError:
        return None


def probe_folder(folder):
    """Create ``folder`` and write, sync and remove a 4 KB file in it, so that a full disk or a
    read-only place is found before hours of work, not after. Raises OSError."""
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".write-test-{os.getpid()}")
    try:
        with open(probe, "wb") as handle:
            handle.write(b"0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        if os.path.exists(probe):
            os.remove(probe)


def ensure_writable_folder(folder):
    """``probe_folder``; a failure raises WriteError naming ``folder``."""
    try:
        probe_folder(folder)
    except OSError as error:
        raise WriteError.from_os_error(folder, error) from None


def output_location_problem(path, what="file"):
    """Why ``path`` cannot be written as a new or replaced ``what`` ("file" or "folder"), or None.

    Checked before any work, so that an output named through a regular file, onto a folder (or,
    for a folder, onto a file) or into a read-only place fails at once instead of after hours."""
    path = os.path.abspath(path)
    if what == "file" and os.path.isdir(path):
        return f"{path} is a folder; name a file"
    if what == "folder" and os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a folder"
    existing = nearest_existing(path if what == "folder" else os.path.dirname(path))
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8", newline=None):
    """Open a stream whose content replaces ``path`` when the ``with`` block ends without error.

    mode: "w" (text, in ``encoding``, with ``newline`` as for ``open``) or "wb" (bytes).
    The target's folder is created when missing. If the block raises, ``path`` is untouched
    and the temporary file is removed; an OSError (a full disk) comes out as WriteError, which
    names ``path``.
    """
    if mode not in _WRITE_MODES:
        raise ValueError(f"mode must be one of {_WRITE_MODES}, got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        descriptor, temporary = _create_temporary_file(folder, os.path.basename(path))
    except OSError as error:
        raise WriteError.from_os_error(path, error) from None
    try:
        text_options = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
        with open(descriptor, mode, **text_options) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise WriteError.from_os_error(path, error) from None
        raise


def write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w", encoding=encoding) as stream:
        stream.write(text)


def write_bytes(path, data):
    """Write ``data`` (bytes-like) to ``path`` atomically."""
    with atomic_write(path, "wb") as stream:
        stream.write(data)


def write_json(path, obj, indent=2, sort_keys=True, separators=None):
    """Write ``obj`` as JSON text ending in a newline, atomically.

    ``indent``, ``sort_keys`` and ``separators`` are passed to ``json.dump``; the defaults give
    stable, diff-friendly files. ``indent=None`` writes one line.
    """
    with atomic_write(path, "w") as stream:
        json.dump(obj, stream, indent=indent, sort_keys=sort_keys, separators=separators)
        stream.write("\n")


def write_figure_png(path, figure, dpi=None):
    """Render a matplotlib ``figure`` as PNG into ``path`` atomically (``dpi``: the figure's when None)."""
    with atomic_write(path, "wb") as stream:
        figure.savefig(stream, format="png", dpi=dpi)


def read_utf8(path):
    """The text of ``path``; ValueError naming the file and the byte when it is not UTF-8."""
    with open(path, encoding="utf-8") as handle:
        try:
            return handle.read()
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def read_json_object(path):
    """The JSON object (a dict) in ``path``; ValueError naming the file when it is not UTF-8, not
    valid JSON or not an object."""
    try:
        value = json.loads(read_utf8(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def read_json_and_sha256(path):
    """(the parsed JSON of the file at ``path``, the SHA-256 of its bytes as hex), from one read.
    OSError, ValueError (not JSON, not UTF-8) and RecursionError (nested too deeply) come out as
    ``open`` and ``json.loads`` raise them."""
    with open(path, "rb") as handle:
        raw = handle.read()
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


def file_sha256(path, chunk_bytes=1 << 20):
    """The SHA-256 of a file's bytes, as hex, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()



def atomic_link(source, path):
    """Make ``path`` a hard link to ``source`` (a file in the same folder), replacing ``path``
    atomically: the same content stored once. Raises OSError where the file system has no hard
    links (the caller then writes a copy)."""
    _, temporary = _at_new_temporary(os.path.dirname(os.path.abspath(path)), os.path.basename(path),
                                     lambda temporary: os.link(source, temporary))
    try:
        os.replace(temporary, path)
    except OSError:
        os.remove(temporary)
        raise

# The names of atomic_write's temporary files: ".{target name}.{8 hex digits}.tmp".
TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def _create_temporary_file(folder, name):
    """Create a new, empty ``.{name}.{random}.tmp`` (TEMPORARY_NAME) in ``folder``; return
    (descriptor, path).

    ``os.open`` with mode 0o666 lets the kernel apply the umask, as for any newly created file.
    """
    return _at_new_temporary(folder, name, lambda temporary: os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _at_new_temporary(folder, name, make):
    """(``make(path)``, path) for a new ``.{name}.{random}.tmp`` path (TEMPORARY_NAME) in ``folder``:
    ``make`` creates the file there, failing with FileExistsError when the name is taken."""
    while True:
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return make(temporary), temporary
        except FileExistsError:
            continue  # another writer drew the same name; draw again
