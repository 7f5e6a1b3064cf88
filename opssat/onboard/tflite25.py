"""What SmartCam's own runtime can read: the static TensorFlow Lite 2.5 check.

On board, SmartCam does not run LiteRT: its ``image_classifier`` program is linked
against TensorFlow Lite 2.5.0. A model that current LiteRT runs can still fail there,
or worse, load and answer nonsense. This module reads the .tflite flatbuffer (with the
schema LiteRT ships) and names every operator version or quantization feature that
2.5 cannot run, without needing SmartCam's binaries.
"""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

#: What the check stands for, in messages and in train_record.json.
RUNTIME = "TensorFlow Lite 2.5.0 (SmartCam's image_classifier)"

#: Builtin operator -> the highest version that SmartCam's TFLite 2.5.0 registers: its
#: ``tflite::ops::builtin::BuiltinOpResolver`` (TensorFlow's
#: tensorflow/lite/kernels/register.cc, compiled into the shipped ``libbuiltin_ops.so``;
#: ``TfLiteVersion()`` reports 2.5.0). Every version from 1 up to it is registered; an
#: operator missing here is not registered at all. Written from what the shipped build
#: registers, operator by operator, because it comes from the 2.5 development line: it
#: knows builtin codes only up to CUMSUM (128) and lacks a few versions that
#: TensorFlow's tensorflow/lite/tools/versioning/runtime_version.cc dates "2.5.0"
#: (BATCH_MATMUL 4, RELU6 3, SQUEEZE 2, STRIDED_SLICE 5). tests/test_tflite25.py checks
#: every entry against the shipped binaries: the version here loads, the next one is
#: refused.
MAX_VERSIONS: dict[str, int] = {
    "ADD": 4, "AVERAGE_POOL_2D": 3, "CONCATENATION": 3, "CONV_2D": 5, "DEPTHWISE_CONV_2D": 6,
    "DEPTH_TO_SPACE": 1, "DEQUANTIZE": 4, "EMBEDDING_LOOKUP": 3, "FLOOR": 1, "FULLY_CONNECTED": 9,
    "HASHTABLE_LOOKUP": 1, "L2_NORMALIZATION": 2, "L2_POOL_2D": 1,
    "LOCAL_RESPONSE_NORMALIZATION": 1, "LOGISTIC": 3, "LSH_PROJECTION": 1, "LSTM": 4,
    "MAX_POOL_2D": 3, "MUL": 4, "RELU": 2, "RELU_N1_TO_1": 1, "RELU6": 2, "RESHAPE": 1,
    "RESIZE_BILINEAR": 3, "RNN": 3, "SOFTMAX": 3, "SPACE_TO_DEPTH": 2, "SVDF": 4, "TANH": 3,
    "SKIP_GRAM": 1, "EMBEDDING_LOOKUP_SPARSE": 1, "PAD": 3, "UNIDIRECTIONAL_SEQUENCE_RNN": 3,
    "GATHER": 4, "BATCH_TO_SPACE_ND": 3, "SPACE_TO_BATCH_ND": 3, "TRANSPOSE": 5, "MEAN": 3,
    "SUB": 5, "DIV": 2, "SQUEEZE": 1, "UNIDIRECTIONAL_SEQUENCE_LSTM": 3, "STRIDED_SLICE": 4,
    "BIDIRECTIONAL_SEQUENCE_RNN": 3, "EXP": 1, "TOPK_V2": 2, "SPLIT": 4, "LOG_SOFTMAX": 2,
    "BIDIRECTIONAL_SEQUENCE_LSTM": 3, "CAST": 1, "PRELU": 1, "MAXIMUM": 4, "ARG_MAX": 2,
    "MINIMUM": 4, "LESS": 2, "NEG": 1, "PADV2": 3, "GREATER": 2, "GREATER_EQUAL": 2,
    "LESS_EQUAL": 2, "SELECT": 2, "SLICE": 4, "SIN": 1, "TRANSPOSE_CONV": 3, "SPARSE_TO_DENSE": 3,
    "TILE": 2, "EXPAND_DIMS": 1, "EQUAL": 3, "NOT_EQUAL": 3, "LOG": 1, "SUM": 2, "SQRT": 1,
    "RSQRT": 1, "SHAPE": 1, "POW": 1, "ARG_MIN": 2, "FAKE_QUANT": 2, "REDUCE_PROD": 1,
    "REDUCE_MAX": 2, "PACK": 3, "LOGICAL_OR": 1, "ONE_HOT": 1, "LOGICAL_AND": 1, "LOGICAL_NOT": 1,
    "UNPACK": 4, "REDUCE_MIN": 2, "FLOOR_DIV": 2, "REDUCE_ANY": 1, "SQUARE": 1, "ZEROS_LIKE": 1,
    "FILL": 2, "FLOOR_MOD": 1, "RANGE": 1, "RESIZE_NEAREST_NEIGHBOR": 4, "LEAKY_RELU": 2,
    "SQUARED_DIFFERENCE": 1, "MIRROR_PAD": 2, "ABS": 2, "SPLIT_V": 2, "UNIQUE": 1, "CEIL": 1,
    "REVERSE_V2": 2, "ADD_N": 1, "GATHER_ND": 2, "COS": 1, "WHERE": 1, "RANK": 1, "ELU": 1,
    "REVERSE_SEQUENCE": 1, "MATRIX_DIAG": 1, "QUANTIZE": 2, "MATRIX_SET_DIAG": 1, "ROUND": 1,
    "HARD_SWISH": 1, "IF": 1, "WHILE": 1, "NON_MAX_SUPPRESSION_V4": 1,
    "NON_MAX_SUPPRESSION_V5": 1, "SCATTER_ND": 1, "SELECT_V2": 1, "DENSIFY": 1, "SEGMENT_SUM": 1,
    "BATCH_MATMUL": 3, "CUMSUM": 1,
}

#: The highest TensorType value the 2.5 schema knows (UINT32); later ones (UINT16, INT4,
#: ...) are read there as garbage.
MAX_TENSOR_TYPE = schema.TensorType.UINT32

#: What to do about a model that fails the check: the toolkit's exports that pass.
FIX = ("re-export with this toolkit (train.sh --quantize float16, int8 or dynamic, "
       "or its float model)")

_NAMES = {value: name for name, value in vars(schema.BuiltinOperator).items()
          if not name.startswith("_")}
_TYPE_NAMES = {value: name for name, value in vars(schema.TensorType).items()
               if not name.startswith("_")}


def operator_name(code: int) -> str:
    return _NAMES.get(code, f"BUILTIN_{code}")


def _builtin(code) -> int:
    """An OperatorCode's builtin operator: newer files keep it in ``builtinCode``, old
    ones (codes up to 127) in ``deprecatedBuiltinCode``."""
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def operators(data: bytes) -> list[tuple[str, int]]:
    """(name, version) of each operator the flatbuffer ``data`` runs, one per operator
    instance in graph order: what an export adds or not."""
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    codes = model.operatorCodes or []
    return [(operator_name(_builtin(codes[op.opcodeIndex])), codes[op.opcodeIndex].version)
            for graph in model.subgraphs or [] for op in graph.operators or []]


def problems(data: bytes) -> list[str]:
    """One line per thing in the flatbuffer ``data`` that TFLite 2.5 cannot run
    correctly, each saying what to do; [] when it can.

    Custom and Flex operators are left to the contract's own ops check. Raises
    whatever the flatbuffer parser raises on a corrupt file.
    """
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    found: list[str] = []
    codes = model.operatorCodes or []
    for code in codes:
        builtin = _builtin(code)
        if builtin == schema.BuiltinOperator.CUSTOM:
            continue
        name, version = operator_name(builtin), code.version
        highest = MAX_VERSIONS.get(name)
        if highest is None:
            found.append(f"{name} (version {version}) is not an operator TFLite 2.5 has: {FIX}")
        elif version > highest:
            found.append(f"{name} version {version} is newer than TFLite 2.5 runs (up to "
                         f"version {highest}): {FIX}")
    for graph in model.subgraphs or []:
        tensors = graph.tensors or []
        for tensor in tensors:
            if tensor.type > MAX_TENSOR_TYPE:
                kind = _TYPE_NAMES.get(tensor.type, f"type {tensor.type}")
                found.append(f"tensor {_name(tensor)} has type {kind}, unknown to TFLite 2.5: "
                             f"{FIX}")
        for op in graph.operators or []:
            if not 0 <= op.opcodeIndex < len(codes):
                continue
            if _builtin(codes[op.opcodeIndex]) != schema.BuiltinOperator.FULLY_CONNECTED:
                continue
            inputs = list(op.inputs) if op.inputs is not None else []
            if len(inputs) > 1 and 0 <= inputs[1] < len(tensors):
                weights = tensors[inputs[1]]
                scales = weights.quantization.scale if weights.quantization else None
                if scales is not None and len(scales) > 1:
                    found.append(
                        f"FULLY_CONNECTED weights {_name(weights)} are quantized per channel "
                        f"({len(scales)} scales): TFLite 2.5 reads only the first, so every "
                        "answer is wrong; re-export with this toolkit: its --quantize int8 "
                        "and dynamic quantize dense layers per tensor (float16 also works)")
    for index, buffer in enumerate(model.buffers or []):
        if getattr(buffer, "offset", 0) > 1:
            found.append(f"buffer {index} is stored outside the flatbuffer (offset "
                         f"{buffer.offset}), which TFLite 2.5 cannot read: {FIX}")
            break
    return list(dict.fromkeys(found))


def _name(tensor) -> str:
    name = tensor.name
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return repr(name or "?")
