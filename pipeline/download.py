"""Download files with checksum verification, and extract archives safely.

``download`` streams a URL to ``<dest>.part`` (resuming an existing ``.part`` with an
HTTP Range request), verifies the checksum and only then renames the file into place,
so nothing sits at the final path unless it is complete and verified.

``safe_extract`` refuses archive members that would land outside the destination
(absolute paths, ``..`` components, links pointing outside, device files, FIFOs) and
extracts into a temporary directory next to the destination before renaming into place.
The caller verifies the archive's checksum first.
"""

import hashlib
import http.client
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

CHUNK_SIZE = 1 << 16


class DownloadError(RuntimeError):
    """A download failed: HTTP error, interruption, or checksum mismatch."""


class ArchiveError(RuntimeError):
    """Base class for archive extraction errors."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written outside the destination, or is a device/FIFO."""


class CorruptArchiveError(ArchiveError):
    """An archive is truncated or corrupt."""


class _Interrupted(Exception):
    """The server closed the connection before sending the whole body (internal)."""


# --------------------------------------------------------------------------- checksums

def file_digest(path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks.

    Parameters
    ----------
    path : str or Path
        File to hash.
    algorithm : str
        Any name accepted by :func:`hashlib.new`, e.g. ``"md5"`` or ``"sha256"``.
    """
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path, md5: str | None = None, sha256: str | None = None,
                    sha1: str | None = None) -> bool:
    """Check a file against the given digests.

    Parameters
    ----------
    path : str or Path
        File to check.
    md5, sha256, sha1 : str, optional
        Expected hex digests (case-insensitive). Each one given is checked. SHA-1 is here because
        some publishers pin only that (the ADE20K archive, see ``pipeline.datasets.SOURCES``).

    Returns
    -------
    bool
        True when at least one digest was given and all given digests match;
        False when no digest was given (nothing could be verified).

    Raises
    ------
    DownloadError
        On a mismatch; the message names the file, the algorithm, the expected
        and the actual digest.
    """
    expected = {"md5": md5, "sha1": sha1, "sha256": sha256}
    checked = False
    for algorithm, want in expected.items():
        if want is None:
            continue
        got = file_digest(path, algorithm)
        if got != want.lower():
            raise DownloadError(f"{algorithm} checksum mismatch for {path}: "
                                f"expected {want.lower()}, found {got}")
        checked = True
    return checked


# --------------------------------------------------------------------------- download

def download(url: str, dest_path, *, md5: str | None = None, sha256: str | None = None,
             sha1: str | None = None, progress: bool = True, retries: int = 3,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest_path``, verifying its checksum.

    The data is streamed to ``dest_path + ".part"``. An existing ``.part`` is resumed
    with an HTTP Range request when the server answers 206 (Partial Content); when it
    answers 200 the download restarts from zero. After the body is complete the
    checksum is verified and the file is renamed atomically (:func:`os.replace`) to
    ``dest_path``. An interrupted transfer is resumed up to ``retries`` times; after
    that the ``.part`` file is kept so a later call can resume it.

    Parameters
    ----------
    url : str
        Source URL (http, https, or anything urllib opens).
    dest_path : str or Path
        Final path of the file.
    md5, sha256, sha1 : str, optional
        Expected hex digests. With none of them, a warning is issued and the file is
        accepted unverified.
    progress : bool
        Show a tqdm progress bar (on stderr).
    retries : int
        How many times an interrupted transfer is resumed before giving up.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    Path
        ``dest_path``.

    Raises
    ------
    DownloadError
        On an HTTP/network error, an interruption that outlasts ``retries``, or a
        checksum mismatch (the partial file is then deleted).
    """
    dest = Path(dest_path)
    part = dest.with_name(dest.name + ".part")
    digests = {"md5": md5, "sha256": sha256, "sha1": sha1}
    if all(v is None for v in digests.values()):
        warnings.warn(f"no checksum given for {url}: {dest} will not be verified", stacklevel=2)
    if dest.exists():
        try:
            verify_checksum(dest, **digests)
            return dest
        except DownloadError as err:
            warnings.warn(f"existing file does not verify, downloading again: {err}", stacklevel=2)
    dest.parent.mkdir(parents=True, exist_ok=True)

    for attempt in range(retries + 1):
        try:
            _fetch(url, part, progress=progress, timeout=timeout)
            break
        except _Interrupted as err:
            if attempt == retries:
                raise DownloadError(f"download of {url} interrupted ({err}) after {retries + 1} "
                                    f"attempt(s); the partial data is kept in {part}, "
                                    f"call again to resume") from None

    try:
        verify_checksum(part, **digests)
    except DownloadError as err:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed verification, partial file deleted: "
                            f"{err}") from None
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Stream ``url`` into ``part``, appending when the server honours a Range request."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Range not satisfiable: the .part is complete if the total size equals it.
            total = (err.headers.get("Content-Range") or "").rpartition("/")[2]
            if total == str(offset):
                return
            part.unlink()
            return _fetch(url, part, progress=progress, timeout=timeout)
        raise DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"download of {url} failed: {err}") from None

    with response:
        if offset and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                part.unlink()
                raise DownloadError(f"download of {url}: asked for bytes {offset}- but the "
                                    f"server answered Content-Range {content_range!r}")
            mode = "ab"
        else:
            mode, offset = "wb", 0
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        received = 0
        with open(part, mode) as f, tqdm(total=None if length is None else offset + length,
                                          initial=offset, unit="B", unit_scale=True,
                                          desc=part.name[:-len(".part")],
                                          disable=not progress) as bar:
            try:
                while chunk := response.read(CHUNK_SIZE):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise _Interrupted(f"{type(err).__name__}: {err}") from None
    if length is not None and received < length:
        raise _Interrupted(f"received {received} of {length} bytes")


# --------------------------------------------------------------------------- extraction

def safe_extract(archive_path, dest_dir) -> Path:
    """Extract a .tar, .tar.gz, .tgz or .zip archive into ``dest_dir``, refusing unsafe members.

    Verify the archive's checksum before calling this. All members are checked before
    anything is extracted. Extraction goes to a temporary directory next to
    ``dest_dir`` (inside it when it exists); then, if ``dest_dir`` does not exist, the
    temporary directory is renamed to it, otherwise each top-level entry is renamed
    into it (an entry that already exists there is an error, checked before anything
    is moved). A failure leaves no partial tree behind.

    Parameters
    ----------
    archive_path : str or Path
        The archive; its format is chosen by its suffix.
    dest_dir : str or Path
        Destination directory.

    Returns
    -------
    Path
        ``dest_dir``.

    Raises
    ------
    UnsafeArchiveError
        A member has an absolute path or a ``..`` component, is a symlink/hardlink
        pointing outside the destination (or lies under such a link), or is a device
        file or FIFO.
    CorruptArchiveError
        The archive is truncated or corrupt.
    FileExistsError
        A top-level entry of the archive already exists in ``dest_dir``.
    ValueError
        The suffix is not a supported archive format.
    """
    archive = Path(archive_path)
    dest = Path(dest_dir)
    name = archive.name.lower()
    if name.endswith(".zip"):
        extract = _extract_zip
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        extract = _extract_tar
    else:
        raise ValueError(f"unsupported archive format for {archive}: expected .tar, .tar.gz, "
                         f".tgz or .zip")

    # The temporary directory sits inside an existing dest (same filesystem, no need
    # for a writable parent), otherwise next to it.
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-",
                                dir=dest if dest.is_dir() else dest.parent))
    try:
        try:
            extract(archive, tmp)
        except (tarfile.ReadError, tarfile.CompressionError, zipfile.BadZipFile,
                EOFError, zlib.error) as err:
            raise CorruptArchiveError(f"archive {archive} is truncated or corrupt: {err}") from None
        except getattr(tarfile, "FilterError", ()) as err:  # second line of defence
            raise UnsafeArchiveError(f"archive {archive}: unsafe member: {err}") from None
        if not dest.exists():
            os.rename(tmp, dest)
            return dest
        entries = sorted(tmp.iterdir())
        clashes = [entry.name for entry in entries if os.path.lexists(dest / entry.name)]
        if clashes:
            raise FileExistsError(f"cannot extract {archive} into {dest}: {', '.join(clashes)} "
                                  f"already exist(s) there")
        for entry in entries:
            os.rename(entry, dest / entry.name)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_member(archive: Path, name: str, *, link: str | None = None,
                  hardlink: bool = False, links: set[str] | None = None) -> str:
    """Raise UnsafeArchiveError if member ``name`` (or its link target) escapes the destination.

    Returns the normalised member path.
    """
    unsafe = f"archive {archive} has an unsafe member {name!r}"
    path = name.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafeArchiveError(f"{unsafe}: absolute path")
    if ".." in path.split("/"):
        raise UnsafeArchiveError(f"{unsafe}: '..' path component")
    path = posixpath.normpath(path)
    parents = path.split("/")[:-1]
    for i in range(1, len(parents) + 1):
        if links and "/".join(parents[:i]) in links:
            raise UnsafeArchiveError(f"{unsafe}: lies under the link {'/'.join(parents[:i])!r}")
    if link is not None:
        target = link.replace("\\", "/")
        base = "" if hardlink else posixpath.dirname(path)  # hardlink targets are archive-relative
        resolved = posixpath.normpath(posixpath.join(base, target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            kind = "hardlink" if hardlink else "symlink"
            raise UnsafeArchiveError(f"{unsafe}: {kind} to {link!r} points outside the destination")
    return path


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        links: set[str] = set()
        for member in members:
            if member.isdev():
                raise UnsafeArchiveError(f"archive {archive} has an unsafe member "
                                         f"{member.name!r}: device file or FIFO")
            link = member.linkname if (member.issym() or member.islnk()) else None
            path = _check_member(archive, member.name, link=link, hardlink=member.islnk(),
                                 links=links)
            if member.issym():
                links.add(path)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=members)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                raise UnsafeArchiveError(f"archive {archive} has an unsafe member "
                                         f"{info.filename!r}: device file or FIFO")
            link = zf.read(info).decode("utf-8", "replace") if stat.S_ISLNK(mode) else None
            _check_member(archive, info.filename, link=link)
        # zipfile writes symlink members as regular files holding the target path.
        for info in infos:
            zf.extract(info, dest)
