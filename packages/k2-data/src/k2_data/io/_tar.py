"""Read WebDataset tar shards (img2dataset layout) sample by sample, without decoding images."""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
"""Member extensions read as the sample's image, in order of preference (case-insensitive)."""

# webdataset's own split (``base_plus_ext``): the key is everything before the first dot of
# the file name (directories included), the extension everything after it.
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True, kw_only=True)
class ShardSample:
    """One sample of a tar shard: its members' original bytes, or why it cannot be used.

    Args:
        key: the ``__key__`` (member name up to the first dot of its file name). For a
            member rejected on its own (unsafe name, not a regular file, unreadable tar),
            the whole member name, so the row still says which member it was.
        names: member names of this sample, in tar order.
        members: extension (lower case, as webdataset) -> original bytes, image and
            ``.txt`` / ``.json`` sidecars alike.
        image_ext: extension of the image member, None when the sample has none.
        error: None for a usable sample, else ``"<kind>: <detail>"`` with kind one of
            ``unsafe_name``, ``not_a_file``, ``bad_name``, ``no_image``,
            ``duplicate_key``, ``duplicate_member``, ``corrupt_tar``.
        infos: the members' tar headers (for copying them unchanged into filtered shards).
    """

    key: str
    names: tuple[str, ...]
    members: dict[str, bytes] = field(default_factory=dict)
    image_ext: str | None = None
    error: str | None = None
    infos: tuple[tarfile.TarInfo, ...] = field(default=(), repr=False, compare=False)

    @property
    def image(self) -> bytes | None:
        """The encoded image bytes (None when the sample has no image member)."""
        return None if self.image_ext is None else self.members[self.image_ext]


def unsafe_name_reason(name: str) -> str | None:
    """Why a tar member name is unsafe to use as a path, or None when it is safe.

    Names are never extracted to disk here, but keys flow into output paths and other
    tools, so absolute paths, drive letters, ``..`` components and NUL bytes are rejected.

    Args:
        name: the member name as stored in the tar.

    Returns:
        None, or ``"absolute path"``, ``"path traversal"``, ``"NUL byte"`` or ``"empty name"``.
    """
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL byte"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "path traversal"
    return None


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, lower-case extension) of a member name as webdataset groups it, or None."""
    match = _KEY_EXT.match(name)
    return None if match is None else (match.group(1), match.group(2).lower())


def shard_stem(path: str | os.PathLike) -> str:
    """A shard's name without its tar suffixes: ``00012.tar`` and ``00012.tar.gz`` give ``00012``."""
    name = Path(path).name
    cut = name.find(".tar")
    return name if cut <= 0 else name[:cut]


def _member_type(info: tarfile.TarInfo) -> str:
    if info.isdir():
        return "directory"
    if info.issym():
        return f"symlink to {info.linkname!r}"
    if info.islnk():
        return f"hard link to {info.linkname!r}"
    return "special file"


class _Grouper:
    """Collects consecutive members with one key into a `ShardSample`."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.names: list[str] = []
        self.infos: list[tarfile.TarInfo] = []
        self.members: dict[str, bytes] = {}
        self.error: str | None = None
        self.seen: set[str] = set()

    def add(self, key: str, ext: str, info: tarfile.TarInfo, data: bytes) -> None:
        self.key = key
        self.names.append(info.name)
        self.infos.append(info)
        if ext in self.members and self.error is None:
            self.error = f"duplicate_member: {info.name!r} appears twice"
        self.members.setdefault(ext, data)

    def flush(self) -> ShardSample | None:
        if self.key is None:
            return None
        key, error = self.key, self.error
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in self.members), None)
        if error is None and key in self.seen:
            error = "duplicate_key: the key already named an earlier sample in this shard"
        if error is None and image_ext is None:
            error = (
                f"no_image: members {','.join(self.members)} hold no {'/'.join(IMAGE_EXTENSIONS)}"
            )
        self.seen.add(key)
        sample = ShardSample(
            key=key,
            names=tuple(self.names),
            members=self.members,
            image_ext=image_ext,
            error=error,
            infos=tuple(self.infos),
        )
        self.key, self.names, self.infos, self.members, self.error = None, [], [], {}, None
        return sample


def _alone(info: tarfile.TarInfo, error: str) -> ShardSample:
    return ShardSample(key=info.name, names=(info.name,), error=error, infos=(info,))


def iter_shard(path: str | os.PathLike) -> Iterator[ShardSample]:
    """Iterate the samples of a WebDataset tar shard in tar order, never decoding an image.

    Consecutive members sharing a key form one sample, as in webdataset. Every member ends
    up in exactly one yielded sample: unusable members and samples are yielded with an
    ``error`` instead of being skipped or raised, so a stage can account for each of them.
    The shard is read as a stream (``r|*``), so gzip/bz2/xz tars work too. Why not
    ``webdataset.WebDataset``: it raises or silently skips on the faults this must record.

    Args:
        path: the ``.tar`` shard.

    Returns:
        An iterator of `ShardSample`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shard {path} does not exist or is not a file")
    group = _Grouper()
    with open(path, "rb") as raw:
        try:
            # Not a with-statement: an unreadable archive is recorded, not raised.
            tar = tarfile.open(fileobj=raw, mode="r|*")  # noqa: SIM115  (closed below)
        except tarfile.TarError as error:
            yield ShardSample(key=path.name, names=(), error=f"corrupt_tar: {error}")
            return
        with tar:
            position = 0
            try:
                for info in tar:
                    position += 1
                    unsafe = unsafe_name_reason(info.name)
                    split = split_member_name(info.name)
                    if unsafe is not None or not info.isfile() or split is None:
                        if (done := group.flush()) is not None:
                            yield done
                        if unsafe is not None:
                            yield _alone(info, f"unsafe_name: {unsafe} in {info.name!r}")
                        elif not info.isfile():
                            yield _alone(info, f"not_a_file: {_member_type(info)}")
                        else:
                            yield _alone(
                                info, f"bad_name: {info.name!r} does not split into key.extension"
                            )
                        continue
                    handle = tar.extractfile(info)
                    data = handle.read() if handle is not None else b""
                    if group.key is not None and split[0] != group.key:
                        yield group.flush()  # type: ignore[misc]
                    group.add(split[0], split[1], info, data)
            except (tarfile.TarError, EOFError, OSError) as error:
                if (done := group.flush()) is not None:
                    yield done
                detail = f"{type(error).__name__}: {error}"
                yield ShardSample(
                    key=f"{path.name}#{position}",
                    names=(),
                    error=f"corrupt_tar: after member {position}: {detail}",
                )
                return
    if (done := group.flush()) is not None:
        yield done
