"""Official checkpoints in the local cache: pull (download or take a file, verify, convert once) and look up.

Layout under ``$ROS_SEG_CACHE/zoo`` (see model_cache.cache_dir):
- ``NAME.pt``: the converted ros_seg checkpoint (model config and class metadata inside), written
  atomically, with its SHA-256 recorded beside it (``NAME.pt.sha256``). Only an entry whose record
  matches is used; the node and the other tools only ever read these.
- ``downloads/FILE.part``: a download in progress or broken off; the next pull resumes it with an
  HTTP Range request. ``downloads/FILE``: a complete download, deleted once converted.
A pull that fails (checksum, conversion, unknown file) leaves no ``NAME.pt`` and no download it
made; a pull of one entry at a time (a lock file per entry).
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ros_seg.inference.model_cache import cache_dir, intact_entry, record_entry
from ros_seg.inference.resumable_download import DownloadInterrupted, DownloadRefused, download_part
from ros_seg.inference.zoo_catalogue import ENTRIES, ZooEntry, ZooError, zoo_entry
from ros_seg.models.checkpoint import CheckpointError, save_checkpoint
from ros_seg.models.official_conversion import import_official_checkpoint

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 3


def zoo_dir() -> Path:
    """The zoo's cache folder, created if missing."""
    return cache_dir("zoo")


def cached_path(entry: ZooEntry) -> Path:
    """Where the converted checkpoint of `entry` lives in the cache."""
    return zoo_dir() / f"{entry.name}.pt"


def zoo_weights(name: str) -> Path:
    """The converted checkpoint of zoo model `name` in the cache; ZooError (naming the command that fetches it)
    when the name is unknown or the model was not pulled here. Nothing is downloaded."""
    entry = zoo_entry(name)
    path = cached_path(entry)
    if not intact_entry(path):
        raise ZooError(f"zoo model {entry.name!r} is not in the cache ({zoo_dir()}): run `ros-seg zoo pull "
                       f"{entry.name}` on this machine first (or `ros-seg zoo pull {entry.name} --from-file FILE` "
                       f"with {entry.file_name} downloaded by hand); nothing is downloaded at run time")
    return path


@dataclass
class FileDigests:
    """MD5 and SHA-256 (hex) of a file."""

    md5: str
    sha256: str


def file_digests(path: Path) -> FileDigests:
    """MD5 and SHA-256 of the file `path`, read once."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            md5.update(block)
            sha256.update(block)
    return FileDigests(md5.hexdigest(), sha256.hexdigest())


def _check_published_checksum(entry: ZooEntry, path: Path, what: str) -> FileDigests:
    """The file's digests; ZooError when they contradict what the authors publish (size, MD5 prefix)."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise ZooError(f"{what} has {size} bytes, but the official {entry.file_name} has {entry.size}: it is "
                       f"not the file of zoo model {entry.name!r} (or it is incomplete)")
    digests = file_digests(path)
    if entry.md5_prefix and not digests.md5.startswith(entry.md5_prefix):
        raise ZooError(f"{what} has MD5 {digests.md5}, but the official {entry.file_name} has an MD5 starting "
                       f"with {entry.md5_prefix} (the authors' checksum): it is corrupt or not the file of zoo "
                       f"model {entry.name!r}")
    return digests


@contextmanager
def _entry_lock(entry: ZooEntry) -> Iterator[None]:
    """Hold the pull lock of `entry`; ZooError if another pull of it is running."""
    lock_path = zoo_dir() / f".{entry.name}.lock"
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ZooError(f"another `ros-seg zoo pull {entry.name}` is running (lock {lock_path})") from None
        yield


def _download(entry: ZooEntry, url: str, retries: int, progress: bool, say: Callable[[str], None]) -> Path:
    """The official file, downloaded (resuming a `.part` left before) into the cache's downloads folder."""
    downloads = zoo_dir() / "downloads"
    done = downloads / entry.file_name
    if done.is_file():
        say(f"using the complete download {done} from an earlier pull")
        return done
    part = downloads / f"{entry.file_name}.part"

    def answered(offset: int, total: int | None) -> None:
        size = f"{total} bytes" if total is not None else "size not announced"
        say(f"resuming {url} at byte {offset} ({size})" if offset else f"downloading {url} ({size})")

    for attempt in range(retries + 1):
        try:
            download_part(url, part, progress=progress, on_response=answered)
            break
        except DownloadInterrupted as exc:
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise ZooError(f"download of {entry.name} interrupted: {exc}; {kept} bytes are kept in {part}: run "
                               f"`ros-seg zoo pull {entry.name}` again to resume (or download the file by hand and "
                               "use --from-file)") from None
            say(f"{exc}; retrying ({attempt + 1} of {retries})")
        except DownloadRefused as exc:
            part.unlink(missing_ok=True)
            raise ZooError(f"download of {entry.name} refused: {exc}") from None
    os.replace(part, done)
    return done


def pull(name: str | ZooEntry, from_file: str | Path | None = None, mirror: str | None = None,
         retries: int = DEFAULT_RETRIES, progress: bool = True, say: Callable[[str], None] = print) -> Path:
    """Put zoo model `name` (or a catalogue entry) into the cache, converted; its path. A model already there is
    reused as it is.

    The official file is downloaded from the authors' link (or `mirror` + its file name), resuming a
    broken-off download, or taken from `from_file`; it must match the checksum the authors publish;
    it is converted into the entry's ros_seg model (every tensor must fit) and stored atomically.
    ZooError with the reason and what to do for every failure; nothing is left half-written.
    """
    entry = name if isinstance(name, ZooEntry) else zoo_entry(name)
    target = cached_path(entry)
    with _entry_lock(entry):
        if from_file is None and intact_entry(target):
            say(f"{entry.name} is in the cache already: {target}")
            return target
        if from_file is not None:
            source = Path(from_file)
            if not source.is_file():
                raise ZooError(f"--from-file {source} is not a file")
            what, downloaded = f"{source}", False
        else:
            url = f"{mirror.rstrip('/')}/{entry.file_name}" if mirror else entry.url
            if url is None:
                raise ZooError(f"the authors give no direct download link for {entry.name}: download "
                               f"{entry.file_name} by hand from {entry.page}, then run `ros-seg zoo pull "
                               f"{entry.name} --from-file {entry.file_name}`")
            source = _download(entry, url, retries, progress, say)
            what, downloaded = f"the download of {url}", True
        try:
            digests = _check_published_checksum(entry, source, what)
            say(f"checked {source}: md5 {digests.md5} (the authors' checksum: {entry.checksum_text}), sha256 "
                f"{digests.sha256}")
            if not entry.md5_prefix:
                say(f"the authors publish no checksum for {entry.file_name}: it is checked by converting it (every "
                    "tensor must fit the model)")
            imported = import_official_checkpoint(source, entry.model)
        except (CheckpointError, ZooError) as exc:
            if downloaded:
                source.unlink(missing_ok=True)
            if isinstance(exc, CheckpointError):
                raise ZooError(f"{what} is not a checkpoint of zoo model {entry.name!r} ({entry.model}): {exc}"
                               ) from None
            raise
        save_checkpoint(target, imported.model, imported.config, imported.metadata, extra={
            "zoo": entry.name, "converted_from": entry.url or entry.page, "source_file": entry.file_name,
            "source_md5": digests.md5, "source_sha256": digests.sha256,
        })
        record_entry(target)
        if downloaded:
            source.unlink()
        say(f"converted {entry.file_name} ({imported.container}, {imported.tensors} tensors) into {target}")
        return target


def cached_entries() -> list[ZooEntry]:
    """The zoo entries whose converted checkpoint is in the cache (intact)."""
    return [entry for entry in ENTRIES if intact_entry(cached_path(entry))]
