"""Files that appear whole or not at all: a folder replaced atomically, a file or a download checked before it is put
in place.

A crash at any moment leaves the old folder or the new one, never a mix, and never a partial download.
"""
import contextlib
import ctypes
import hashlib
import os
import secrets
import shutil
import tempfile
import urllib.request
from pathlib import Path

TIMEOUT = 60  # seconds a download may wait for the server to answer or send more


def download(url, path, sha256, progress=False):
    """Download url to path through a temporary file beside it; the file appears only whole and with the right hash.

    Raises OSError (or ValueError for a malformed url) saying what went wrong; nothing is left behind then.
    """
    folder, name = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder or ".")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            from tqdm import tqdm  # noqa: PLC0415  (only needed here)

            total, size = int(response.headers.get("Content-Length") or 0) or None, 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            if total is not None and size != total:
                raise OSError(f"got {size} of {total} bytes")
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != sha256:
            raise OSError(f"SHA-256 {digest.hexdigest()} is not the expected {sha256}")
        os.replace(tmp, path)
    except BaseException:  # URLError, HTTPError and timeouts are OSErrors; Ctrl-C too leaves nothing
        os.remove(tmp)
        raise


def replace_folder(path, write):
    """Call write(folder) to fill a new folder beside path, flush it to disk, then swap it in for path; OSError on failure.

    The new folder is `.NAME.saving` until the swap; one left by a save that died is removed first.
    """
    path = Path(path)
    new = path.with_name(f".{path.name}.saving")
    try:
        recover_folder(path)
        shutil.rmtree(new, ignore_errors=True)
        write(new)
        fsync_tree(new)
        if path.exists():
            exchange(new, path)
            shutil.rmtree(new)  # now the old folder
        else:
            os.rename(new, path)
        fsync_dir(path.parent)
    except OSError:
        shutil.rmtree(new, ignore_errors=True)
        raise


def replace_file(path, write):
    """Call write(tmp) to fill a new file beside path (tmp is its name), flush it to disk, then rename it to path.

    The new file is `.NAME.RANDOM.part` until the rename, made with the usual permissions (0666 less the umask);
    whatever write raises (an OSError, a failed check) removes it and is raised again, and path stays as it was.
    OSError when the folder is missing or cannot be written to.
    """
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.part")
    open(tmp, "xb").close()  # the folder can be written to: before write, which may take long
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(folder or ".")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # gone once renamed
            os.remove(tmp)
        raise


def fsync_tree(root):
    """Flush every file and folder below root to disk, so that the rename that publishes it cannot outrun its data."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(folder)


def fsync_dir(folder):
    """Flush a folder's list of names to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def renameat2_exchange(a, b):
    """Swap two paths in one step with Linux's renameat2(RENAME_EXCHANGE); False where that is not supported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    at_fdcwd, rename_exchange = -100, 2
    return renameat2 is not None and renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def exchange(a, b):
    """Swap two folders: in one step where the system can, else in three renames (recover_folder mends a crash
    between them)."""
    if renameat2_exchange(a, b):
        return
    aside = aside_of(b)
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def aside_of(path):
    """Where exchange's three renames keep the old folder path for a moment: path.old."""
    return Path(path).with_name(Path(path).name + ".old")


def recover_folder(path):
    """Mend what a crash within exchange's three renames left of the folder path, before it is read or replaced:
    the old folder put back where the crash left path missing, or its copy removed where the new one is in place."""
    aside = aside_of(path)
    if aside.is_dir():
        if Path(path).exists():
            shutil.rmtree(aside)
        else:
            os.rename(aside, path)
