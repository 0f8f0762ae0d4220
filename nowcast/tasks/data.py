"""Offline datasets for the tasks: where to find them and how to read them.

Nothing here downloads. Each dataset is looked up, in order, in the directory the user passes
(which must exist: a folder given on purpose is never silently replaced by the others), under ``$NOWCAST_DATA``, in ``../shared/data`` next to the current directory or next to this
project's checkout, and in the system location a Debian package installs (FashionMNIST:
``apt-get install dataset-fashion-mnist`` -> ``/usr/share/datasets/fashion-mnist``). When none
has the files, :class:`DataNotFoundError` lists every place it looked.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..paths import shared_dirs

__all__ = [
    "DataNotFoundError",
    "data_search_path",
    "find_dataset",
    "read_idx",
    "load_fashion_mnist",
    "load_mnist_test",
    "load_digits",
    "load_text",
    "word_tokens",
]

log = logging.getLogger(__name__)

DATA_ENV = "NOWCAST_DATA"
"""Environment variable naming a directory that holds dataset folders (``fashion-mnist/`` ...)."""

SYSTEM_DIRS = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}
"""Where Debian's dataset packages put their files."""


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are in none of the places searched; the message lists them and what to do."""


def data_search_path(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for dataset ``name``, in order (a given ``data_dir`` may be the dataset's
    own folder or a folder holding ``name/``)."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get(DATA_ENV):
        dirs.append(Path(os.environ[DATA_ENV]) / name)
    dirs += shared_dirs("data", name)
    dirs += [Path(p) for p in SYSTEM_DIRS.get(name, ())]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def find_dataset(name: str, files: Sequence[str], data_dir: str | os.PathLike | None = None) -> Path:
    """The first searched directory holding every one of ``files`` (each also accepted without ``.gz``)."""

    def has(d: Path, f: str) -> bool:
        return (d / f).is_file() or (f.endswith(".gz") and (d / f[:-3]).is_file())

    searched = data_search_path(name, data_dir)
    if data_dir is not None and not Path(data_dir).is_dir():
        # a folder named on purpose is never silently replaced by the default places
        others = "\n  ".join(str(d) for d in data_search_path(name))
        raise DataNotFoundError(
            f"the data folder {data_dir} (data_dir, command line: --data-dir) "
            f"{'is not a folder' if Path(data_dir).exists() else 'does not exist'}; dataset '{name}' needs "
            f"{', '.join(files)}. Without a data folder it is looked for in:\n  {others}"
        )
    for d in searched:
        if all(has(d, f) for f in files):
            log.debug("dataset %s found in %s", name, d)
            if data_dir is not None and d not in searched[:2]:
                log.warning("dataset %s is not in the data folder %s; using %s", name, data_dir, d)
            return d
    where = "\n  ".join(str(d) for d in searched)
    hint = " or `apt-get install dataset-fashion-mnist`" if name in SYSTEM_DIRS else ""
    raise DataNotFoundError(
        f"dataset '{name}' not found (needs {', '.join(files)}). Looked in:\n  {where}\n"
        f"Pass data_dir=/path/to/{name} (command line: --data-dir), set ${DATA_ENV} to a folder holding "
        f"'{name}/'{hint}. Nothing is downloaded."
    )


def _open(path: Path):
    if path.is_file():
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return open(path.with_suffix(""), "rb")  # the uncompressed twin of a .gz name


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped) as a numpy array of its stored shape."""
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says shape {dims} but holds {data.size} values (truncated file?)")
    return data.reshape(dims)


FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """FashionMNIST as uint8 arrays: ``train_x`` [60000, 28, 28], ``train_y``, ``test_x`` [10000, 28, 28], ``test_y``."""
    d = find_dataset("fashion-mnist", FASHION_FILES, data_dir)
    out = {
        key: read_idx(d / f)
        for key, f in zip(("train_x", "train_y", "test_x", "test_y"), FASHION_FILES)
    }
    for split in ("train", "test"):
        if len(out[f"{split}_x"]) != len(out[f"{split}_y"]):
            raise ValueError(f"FashionMNIST in {d}: {split} images and labels differ in number")
    return out


MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def load_mnist_test(data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 10k MNIST test images as uint8 ``(images [10000, 28, 28], labels [10000])`` (the
    training images are not needed by any task)."""
    d = find_dataset("mnist", MNIST_TEST_FILES, data_dir)
    images, labels = (read_idx(d / f) for f in MNIST_TEST_FILES)
    if len(images) != len(labels):
        raise ValueError(f"MNIST in {d}: images and labels differ in number")
    return images, labels


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's built-in 8x8 digits (1797 images, values 0..16): ``(images [N, 8, 8], labels [N])``."""
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def load_text(name: str, filename: str, data_dir: str | os.PathLike | None = None) -> str:
    """The text of ``filename`` in dataset ``name`` (UTF-8)."""
    d = find_dataset(name, (filename,), data_dir)
    return (d / filename).read_text(encoding="utf-8")


def word_tokens(text: str) -> list[str]:
    """WikiText word tokens: whitespace split of each line plus an ``<eos>`` per line."""
    return [w for line in text.splitlines() for w in line.split() + ["<eos>"]]
