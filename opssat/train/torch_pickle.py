"""Read a legacy (non-zip) PyTorch ``state_dict`` file without torch.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file
names. This reader never hands the file to a general unpickler: only the few
globals a state dict needs are accepted, each mapped to an inert stand-in here,
and anything else is refused before it can run. The legacy layout is five
parts in a row: four pickles (magic number, format version, system info, the
state dict whose tensors point at storages through persistent ids, the list of
storage keys) then each storage's raw bytes behind an int64 element count.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opssat.core.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_DEFAULT_FIX = "use a legacy (non-zip) PyTorch state_dict file saved by torch.save"


class TorchPickleError(UserError):
    """The file is not a legacy PyTorch state dict this reader accepts."""


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only carries the dtype."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True, slots=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True, slots=True)
class _StorageView:
    root: _StorageRef
    offset: int
    numel: int


@dataclass(frozen=True, slots=True)
class _TensorRef:
    """What ``_rebuild_tensor_v2`` would build, kept as plain numbers until the
    storages' bytes have been read."""

    storage: _StorageRef | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ValueError(f"tensor {what} is {value!r}, not a tuple of non-negative ints")
    return tuple(value)


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object,
                    *_rest: object) -> _TensorRef:
    if not isinstance(storage, _StorageRef | _StorageView):
        raise ValueError(f"tensor storage is {type(storage).__name__}, not a storage reference")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool) \
            or storage_offset < 0:
        raise ValueError(f"tensor storage offset is {storage_offset!r}")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise ValueError(f"tensor size {shape} and stride {strides} differ in length")
    return _TensorRef(storage, storage_offset, shape, strides)


def _rebuild_parameter(data: object, *_rest: object) -> object:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _ForbiddenGlobal(Exception):
    pass


class _DataOnlyUnpickler(pickle.Unpickler):
    """Accepts no global at all: for the plain-data parts of the file."""

    def find_class(self, module: str, name: str) -> object:
        raise _ForbiddenGlobal(f"{module}.{name}")

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("unexpected persistent id outside the state dict")


class _StateDictUnpickler(_DataOnlyUnpickler):
    """Accepts the globals a state dict needs and turns storage ids into references."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: object) -> object:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) \
                or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage id {pid!r:.80}")
        root = self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if root.dtype != storage_type.dtype or root.numel != numel:
            raise pickle.UnpicklingError(f"storage {key} is described two different ways")
        if view is None:
            return root
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[1], int)
                and isinstance(view[2], int) and 0 <= view[1]
                and view[1] + view[2] <= numel and view[2] >= 0):
            raise pickle.UnpicklingError(f"malformed storage view {view!r:.80}")
        return _StorageView(root, view[1], view[2])


def _materialise(name: str, ref: _TensorRef, data: dict[str, np.ndarray]) -> np.ndarray:
    storage, base = ref.storage, 0
    if isinstance(storage, _StorageView):
        base, limit = storage.offset, storage.numel
        storage = storage.root
    else:
        limit = storage.numel
    flat = data[storage.key][base:base + limit]
    if math.prod(ref.size) == 0:
        return np.zeros(ref.size, dtype=flat.dtype.newbyteorder("="))
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if last >= flat.size:
        raise ValueError(f"tensor {name!r} reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.size,
        strides=tuple(s * flat.itemsize for s in ref.stride), writeable=False)
    return np.array(view, dtype=flat.dtype.newbyteorder("="))


def parse_legacy_state_dict(raw: bytes) -> dict[str, np.ndarray]:
    """Parse the bytes of a legacy state-dict file; errors are plain exceptions."""
    f = io.BytesIO(raw)
    if raw[:2] == b"PK":
        raise ValueError("it is a zip-format torch file (torch >= 1.6); "
                         "re-save it with torch.save(..., _use_new_zipfile_serialization=False)")
    if _DataOnlyUnpickler(f).load() != LEGACY_MAGIC:
        raise ValueError("no legacy PyTorch magic number at the start")
    version = _DataOnlyUnpickler(f).load()
    if version != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"unsupported PyTorch format version {version!r}")
    sys_info = _DataOnlyUnpickler(f).load()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ValueError("only files written on a little-endian machine are supported")
    unpickler = _StateDictUnpickler(f)
    state = unpickler.load()
    keys = _DataOnlyUnpickler(f).load()
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, _TensorRef) for k, v in state.items()
    ):
        raise ValueError("the pickled object is not a dict of tensor names to tensors")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) \
            or len(set(keys)) != len(keys):
        raise ValueError("the storage key list is malformed")
    missing = set(unpickler.storages) - set(keys)
    if missing:
        raise ValueError(f"storage {sorted(missing)[0]} is used but not stored")
    data: dict[str, np.ndarray] = {}
    for key in keys:
        header = f.read(8)
        if len(header) < 8:
            raise ValueError("file is truncated (storage data missing)")
        (count,) = struct.unpack("<q", header)
        ref = unpickler.storages.get(key)
        if ref is None:
            raise ValueError(f"storage {key} is stored but no tensor uses it")
        if count != ref.numel:
            raise ValueError(f"storage {key} holds {count} elements, expected {ref.numel}")
        nbytes = count * ref.dtype.itemsize
        chunk = f.read(nbytes)
        if len(chunk) < nbytes:
            raise ValueError("file is truncated (storage data cut short)")
        data[key] = np.frombuffer(chunk, dtype=ref.dtype)
    trailing = len(raw) - f.tell()
    if trailing:
        raise ValueError(f"{trailing} unexpected bytes after the last storage")
    return {name: _materialise(name, ref, data) for name, ref in state.items()}


def load_state_dict(path: str | Path, fix: str = _DEFAULT_FIX,
                    raw: bytes | None = None) -> dict[str, np.ndarray]:
    """Read the tensors of a legacy PyTorch state-dict file as numpy arrays.

    ``raw`` passes bytes already read (e.g. to hash them) so the file is read once.
    Any problem raises a one-line :class:`TorchPickleError` ending with ``fix``.
    """
    path = Path(path)
    if raw is None:
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise TorchPickleError(
                f"cannot read PyTorch weights {path}: {err.strerror or err}; {fix}") from None
    try:
        return parse_legacy_state_dict(raw)
    except _ForbiddenGlobal as err:
        raise TorchPickleError(
            f"refusing PyTorch weights {path}: the pickle calls {err}, which a state dict "
            f"never needs (the file may be malicious); {fix}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error, MemoryError, OverflowError,
            RecursionError, UnicodeDecodeError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, EOFError):
            detail = "file is truncated (pickle data ran out)"
        raise TorchPickleError(
            f"cannot read PyTorch weights {path}: {detail}; {fix}") from None
