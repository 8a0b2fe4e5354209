"""Reading the tars of an artifact (shards, encoded): a missing, cut or damaged tar, or a member that does not decode, is
one VltkError naming the tar (and the member), never a traceback from tarfile, webdataset, numpy or PIL.

    for raw in tar_samples(path):                          # webdataset samples: {"__key__", "__url__", "json", ...}
        about = member(raw, "json", json.loads)            # raw["json"] decoded, or a VltkError naming tar and member
        with decoding(raw["__url__"], f"{raw['__key__']}.png"):
            ...                                            # decode later what was read now (PIL, numpy)

A tar is checked whole before its samples are read, headers only: tarfile ends an archive without a word at a cut or a
damaged header after the first, which would silently drop every sample after it.
"""

from __future__ import annotations

import contextlib
import tarfile
import tokenize
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import webdataset as wds
from PIL import Image

from vltk.errors import VltkError

T = TypeVar("T")
DAMAGED = "the artifact is damaged; rebuild it"
END_MARKER = 2 * tarfile.BLOCKSIZE  # the zero blocks that close a tar (tarfile, and so webdataset, writes them)
CUT = ("empty header", "truncated header", "unexpected end of data")  # tarfile's words for a file that ends too soon
# What decoding a damaged member raises: json and numpy ValueError (UnicodeDecodeError, JSONDecodeError), numpy's header
# parser EOFError, SyntaxError and tokenize.TokenError, PIL OSError (UnidentifiedImageError, truncated data),
# SyntaxError (a broken PNG chunk), ValueError and DecompressionBombError (a size that no real image has).
MEMBER_ERRORS = (ValueError, EOFError, SyntaxError, tokenize.TokenError, OSError, Image.DecompressionBombError)


def check_tar(path: Path) -> None:
    """A VltkError unless `path` is a whole tar file: there, a tar from its first header, and closed by the end marker
    right after its last member."""
    if not path.is_file():
        raise VltkError(f"{path} is missing; {DAMAGED}")
    try:
        with tarfile.open(path, "r:") as tar:
            tar.getmembers()  # headers only: the member data is skipped
            end = tar.offset  # where reading stopped: at the end marker, or at a cut or damaged header
    except OSError as err:  # not one of the damages: a file the user cannot read
        raise VltkError(f"cannot read {path}: {err.strerror or err}") from None
    except tarfile.TarError as err:
        what = ("is not a tar file" if not _starts_with_header(path) else "is truncated" if str(err) in CUT else
                "has a damaged header")
        raise VltkError(f"{path} {what} ({err}); {DAMAGED}") from None
    size = path.stat().st_size
    if end + END_MARKER > size:
        raise VltkError(f"{path} is truncated: it ends at byte {size}, before the end of its last member or the "
                        f"end marker; {DAMAGED}")
    with open(path, "rb") as f:
        f.seek(end)
        if f.read(END_MARKER).strip(b"\0"):  # what follows the end marker is padding, read by no one
            raise VltkError(f"{path} has a damaged header at byte {end}; {DAMAGED}")


def _starts_with_header(path: Path) -> bool:
    with open(path, "rb") as f:
        block = f.read(tarfile.BLOCKSIZE)
    try:
        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def tar_samples(path: Path, select: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
    """The webdataset samples (dicts of raw bytes) of one artifact tar, checked whole first (`check_tar`)."""
    check_tar(path)
    # No node/worker splitting here: callers pick the tars each process reads (webdataset's defaults would refuse to
    # run under a distributed launch, or silently drop tars inside DataLoader workers).
    yield from wds.WebDataset(str(path), shardshuffle=False, select_files=select, empty_check=False,
                              nodesplitter=None, workersplitter=None)


@contextlib.contextmanager
def decoding(tar: str, name: str) -> Iterator[None]:
    """Turns what decoding the member `name` (key.ext) of `tar` raises into a VltkError naming both."""
    try:
        yield
    except MEMBER_ERRORS as err:
        reason = (str(err).splitlines() or [""])[0][:200]
        raise VltkError(f"{tar}: member {name} does not decode ({type(err).__name__}: {reason}); {DAMAGED}") from None


def member(raw: dict[str, Any], name: str, decode: Callable[[bytes], T]) -> T:
    """`decode` of the member `name` of a webdataset sample; a missing member or one `decode` fails on is a VltkError."""
    if name not in raw:
        raise VltkError(f"{raw['__url__']}: sample {raw['__key__']} has no {name} member; {DAMAGED}")
    with decoding(raw["__url__"], f"{raw['__key__']}.{name}"):
        return decode(raw[name])
