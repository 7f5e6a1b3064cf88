"""Opening a TFLite model with LiteRT (``ai_edge_litert``), the interpreter SmartCam
uses: the one place that turns a missing or unloadable model into one clear line.

Only ``ai_edge_litert`` is imported, never TensorFlow, so one-image tools start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from ai_edge_litert.interpreter import Interpreter, OpResolverType

from opssat.core.cli import quiet_native_stderr
from opssat.core.errors import UserError, first_line


def max_threads() -> int:
    """The most interpreter threads allowed: beyond a few per core they only slow the
    run down, and tens of thousands exhaust the machine."""
    return 4 * (os.cpu_count() or 1)


def load_interpreter(
    model: Path | bytes,
    num_threads: int | None = None,
    plain_runtime: bool = False,
    allocate: bool = True,
) -> Interpreter:
    """An interpreter (tensors allocated unless ``allocate`` is False), from a file or
    flatbuffer bytes.

    ``plain_runtime`` leaves out the default XNNPACK delegate, as SmartCam's plain
    C API runtime does, so a model is checked on what the payload really runs.
    """
    if num_threads is not None and not 1 <= num_threads <= max_threads():
        raise UserError(f"--num_threads must be from 1 to {max_threads()} (4 per core of this "
                        f"machine), not {num_threads}")
    source = "the model" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise UserError(f"model file {model} not found: train a model first or pass "
                        "--model_file with an existing .tflite file")
    kwargs = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    if plain_runtime:
        kwargs["experimental_op_resolver_type"] = \
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with quiet_native_stderr():
            interpreter = Interpreter(num_threads=num_threads, **kwargs)
            if allocate:
                interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise UserError(f"{source} is not a TFLite model LiteRT can run ({first_line(err)}): "
                        "pass the .tflite file written by training") from err
    return interpreter
