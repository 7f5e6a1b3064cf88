"""The restricted reader of legacy PyTorch files, on files the tests write
themselves (a small writer of the legacy layout, no torch) and on the shipped
EfficientNet-Lite0 weights."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from opssat.core.errors import UserError
from opssat.train.efficientnet_lite import imagenet_weights_file
from opssat.train.torch_pickle import TorchPickleError, load_state_dict

#: torch.serialization's MAGIC_NUMBER and PROTOCOL_VERSION of the legacy format.
MAGIC = 0x1950A86A20F9469CFC6C
VERSION = 1001
DTYPES = {"FloatStorage": "<f4", "LongStorage": "<i8", "DoubleStorage": "<f8"}


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _tensor(storage: str, storage_type: str, numel: int, offset: int, size: tuple[int, ...],
            stride: tuple[int, ...], rebuild: tuple[str, str]) -> bytes:
    """Protocol-2 opcodes for what torch pickles for one tensor of a state dict."""
    persistent_id = _tuple([_str("storage"), _global("torch", storage_type), _str(storage),
                            _str("cpu"), _int(numel), b"N"]) + b"Q"
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple([persistent_id, _int(offset), _tuple([_int(n) for n in size]),
                   _tuple([_int(s) for s in stride]), b"\x89", hooks])
    return _global(*rebuild) + args + b"R"


def write_legacy_pth(path: Path, tensors: dict[str, tuple], storages: dict[str, tuple],
                     rebuild: tuple[str, str] = ("torch._utils", "_rebuild_tensor_v2"),
                     main_pickle: bytes | None = None) -> Path:
    """Write a legacy (non-zip) torch file.

    tensors: name -> (storage key, offset, size, stride);
    storages: key -> (storage type name, 1-D numpy array).
    """
    body = b""
    for name, (key, offset, size, stride) in tensors.items():
        storage_type, values = storages[key]
        body += _str(name) + _tensor(key, storage_type, values.size, offset, size, stride,
                                     rebuild)
    state = (b"\x80\x02" + _global("collections", "OrderedDict") + b")R"
             + b"(" + body + b"u.")
    parts = [
        pickle.dumps(MAGIC, protocol=2),
        pickle.dumps(VERSION, protocol=2),
        pickle.dumps({"protocol_version": VERSION, "little_endian": True,
                      "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2),
        state if main_pickle is None else main_pickle,
        pickle.dumps(list(storages), protocol=2),
    ]
    for storage_type, values in storages.values():
        parts.append(struct.pack("<q", values.size))
        parts.append(values.astype(DTYPES[storage_type]).tobytes())
    path.write_bytes(b"".join(parts))
    return path


FLAT = np.arange(12, dtype=np.float32) * 0.5
GOOD_TENSORS = {
    "layer.weight": ("s0", 0, (3, 4), (4, 1)),
    "layer.transposed": ("s0", 1, (2, 3), (1, 4)),
    "bn.num_batches_tracked": ("s1", 0, (), ()),
    "scale": ("s2", 2, (2,), (1,)),
}
GOOD_STORAGES = {
    "s0": ("FloatStorage", FLAT),
    "s1": ("LongStorage", np.array([7])),
    "s2": ("DoubleStorage", np.array([1.0, 2.0, 3.5, -4.25])),
}


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    return write_legacy_pth(tmp_path / "good.pth", GOOD_TENSORS, GOOD_STORAGES)


def test_reads_tensors_with_offsets_strides_and_dtypes(good_file: Path) -> None:
    state = load_state_dict(good_file)
    assert list(state) == list(GOOD_TENSORS)
    np.testing.assert_array_equal(state["layer.weight"], FLAT.reshape(3, 4))
    expected = np.array([[FLAT[1 + i + 4 * j] for j in range(3)] for i in range(2)])
    np.testing.assert_array_equal(state["layer.transposed"], expected)
    assert state["layer.transposed"].dtype == np.float32
    assert state["bn.num_batches_tracked"].shape == ()
    assert state["bn.num_batches_tracked"].dtype == np.int64
    assert int(state["bn.num_batches_tracked"]) == 7
    np.testing.assert_array_equal(state["scale"], [3.5, -4.25])
    assert state["scale"].dtype == np.float64


def test_forbidden_global_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = write_legacy_pth(tmp_path / "evil.pth", {}, GOOD_STORAGES,
                            main_pickle=pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(TorchPickleError, match=r"refusing .*calls (posix|os|nt)\.system") as err:
        load_state_dict(path)
    assert isinstance(err.value, UserError)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_forbidden_rebuild_function_is_refused(tmp_path: Path) -> None:
    path = write_legacy_pth(tmp_path / "eval.pth", GOOD_TENSORS, GOOD_STORAGES,
                            rebuild=("builtins", "eval"))
    with pytest.raises(TorchPickleError, match=r"builtins\.eval"):
        load_state_dict(path)


def test_globals_are_refused_in_the_plain_data_pickles(tmp_path: Path) -> None:
    raw = write_legacy_pth(tmp_path / "good.pth", GOOD_TENSORS, GOOD_STORAGES).read_bytes()
    sys_info = pickle.dumps({"protocol_version": VERSION, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2)
    evil = b"\x80\x02" + _global("collections", "OrderedDict") + b")R."
    path = tmp_path / "evil_sysinfo.pth"
    path.write_bytes(raw.replace(sys_info, evil, 1))
    with pytest.raises(TorchPickleError, match=r"collections\.OrderedDict"):
        load_state_dict(path)


@pytest.mark.parametrize("cut", [5, 400])
def test_truncated_file_is_a_clear_error(good_file: Path, tmp_path: Path, cut: int) -> None:
    raw = good_file.read_bytes()
    path = tmp_path / "short.pth"
    path.write_bytes(raw[:-cut])
    with pytest.raises(TorchPickleError, match="truncated"):
        load_state_dict(path)


def test_trailing_bytes_are_refused(good_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "long.pth"
    path.write_bytes(good_file.read_bytes() + b"\0\0\0")
    with pytest.raises(TorchPickleError, match="3 unexpected bytes"):
        load_state_dict(path)


def test_tensor_past_its_storage_is_refused(tmp_path: Path) -> None:
    tensors = {"w": ("s0", 4, (3, 4), (4, 1))}
    path = write_legacy_pth(tmp_path / "oob.pth", tensors, {"s0": GOOD_STORAGES["s0"]})
    with pytest.raises(TorchPickleError, match="past the end of its storage"):
        load_state_dict(path)


@pytest.mark.parametrize(("content", "message"), [
    (b"PK\x03\x04" + b"\0" * 40, "zip-format"),
    (pickle.dumps(12345, protocol=2), "magic number"),
    (b"not a pickle at all", "cannot read"),
])
def test_other_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    with pytest.raises(TorchPickleError, match=message):
        load_state_dict(path)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(TorchPickleError, match="cannot read PyTorch weights .*nothing.pth"):
        load_state_dict(tmp_path / "nothing.pth")


def test_reads_the_shipped_efficientnet_lite0_weights() -> None:
    state = load_state_dict(imagenet_weights_file())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(v.dtype == np.float32 for k, v in state.items() if "num_batches" not in k)
    assert all(np.isfinite(v).all() for v in state.values())
    assert (state["_bn0.running_var"] >= 0).all()
