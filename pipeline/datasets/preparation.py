"""Making a dataset available under a data root: found as is, or downloaded, verified, extracted
(and, for ``voc2012aug``, converted)."""

import textwrap
from pathlib import Path

from pipeline.datasets.cityscapes import CITYSCAPES_LOGIN_HELP
from pipeline.datasets.reading import DatasetError
from pipeline.datasets.registry import DATASETS
from pipeline.datasets.sources import SOURCES
from pipeline.datasets.voc import VOC2012, VOC2012Aug, build_voc2012aug, find_sbd
from pipeline.download import download as download_file
from pipeline.download import safe_extract


def expected_layout(cls) -> str:
    """The directory layout a dataset class documents (the ``Layout::`` block of its docstring)."""
    doc = cls.__doc__ or ""
    if "Layout::" not in doc:
        return cls.__name__
    return textwrap.dedent(doc.split("Layout::", 1)[1].strip("\n").split("\n\n")[0])


def prepare(name: str, data_root, download: bool = True, *, sha256: str | None = None,
            progress: bool = True) -> Path:
    """Make dataset ``name`` available under ``data_root`` and return its root.

    A copy already in ``data_root`` is used as is. Otherwise the archive from
    :data:`SOURCES` is downloaded to ``data_root/downloads/``, verified, and
    extracted into ``data_root``. For ``voc2012aug`` the VOC 2012 and SBD archives are
    fetched if absent (even with ``download=False`` copies of both already in ``data_root``
    are converted) and SBD is converted by :func:`build_voc2012aug`.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    data_root : str or Path
        Directory holding (or to hold) the data.
    download : bool
        Download when the data is absent; if False, absence is an error.
    sha256 : str, optional
        Expected SHA-256 of the archive, overriding ``SOURCES`` (CamVid has no
        official checksum); not for ``voc2012aug``, which has two archives.
    progress : bool
        Show a download progress bar.

    Returns
    -------
    Path
        The directory to pass as ``root`` to ``DATASETS[name]``.

    Raises
    ------
    KeyError
        For an unknown name.
    DatasetError
        If the data is absent and cannot be fetched (Cityscapes, the generated ``synthetic``, or
        ``download=False``),
        or the archive lacks the expected layout.
    pipeline.download.DownloadError, pipeline.download.ArchiveError
        From the download or the extraction.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}: expected one of {sorted(DATASETS)}")
    cls = DATASETS[name]
    data_root = Path(data_root)
    found = cls.find_root(data_root)
    if found is not None:
        return found
    if name == "cityscapes":
        raise DatasetError(f"no Cityscapes data in {data_root}. "
                           + CITYSCAPES_LOGIN_HELP.format(root=data_root))
    if name == "synthetic":
        raise DatasetError(f"no synthetic data in {data_root}: the built-in dataset is generated "
                           f"(pipeline.synthetic.generate), not downloaded; expected under it\n{expected_layout(cls)}")
    if name == "voc2012aug":
        if sha256 is not None:
            raise ValueError("prepare('voc2012aug', sha256=...): voc2012aug is built from two archives; "
                             "their checksums are SOURCES['voc2012'] and SOURCES['sbd']")
        return _prepare_voc2012aug(data_root, download, progress)
    if not download:
        raise DatasetError(f"no {name} data in {data_root}: expected under it\n{expected_layout(cls)}")
    archive = _download_and_extract(name, data_root, progress, sha256=sha256)
    found = cls.find_root(data_root)
    if found is None:
        raise DatasetError(f"archive {archive} did not contain the expected {name} layout "
                           f"under {data_root}")
    return found


def _download_and_extract(source_name: str, data_root: Path, progress: bool, sha256: str | None = None) -> Path:
    """Download ``SOURCES[source_name]`` to ``data_root/downloads/``, verify it, extract it into ``data_root``."""
    source = SOURCES[source_name]
    archive = download_file(source["url"], data_root / "downloads" / source["filename"],
                            md5=source.get("md5"), sha1=source.get("sha1"),
                            sha256=sha256 or source.get("sha256"), progress=progress)
    safe_extract(archive, data_root)
    return archive


def _prepare_voc2012aug(data_root: Path, download: bool, progress: bool) -> Path:
    """VOC 2012 and SBD found (or, with ``download``, fetched) under ``data_root``, then converted."""
    parts = {  # source -> (name, where it is expected, how it is found)
        "voc2012": ("VOC 2012", data_root / "VOCdevkit" / "VOC2012", lambda: VOC2012.find_root(data_root)),
        "sbd": ("SBD", data_root / "benchmark_RELEASE" / "dataset" / "{cls/*.mat,train.txt,val.txt}",
                lambda: find_sbd(data_root)),
    }
    missing = [key for key, (_, _, find) in parts.items() if find() is None]
    if missing and not download:
        lacking = "; ".join(f"{parts[k][0]} (expected at {parts[k][1]}, from {SOURCES[k]['url']})" for k in missing)
        raise DatasetError(f"no voc2012aug data in {data_root}, and it lacks what voc2012aug is built from: "
                           f"{lacking}. The prepared layout is\n{expected_layout(VOC2012Aug)}")
    for key in missing:
        archive = _download_and_extract(key, data_root, progress)
        if parts[key][2]() is None:
            raise DatasetError(f"archive {archive} did not contain {parts[key][0]} at {parts[key][1]}")
    return build_voc2012aug(data_root, find_sbd(data_root), progress=progress)
