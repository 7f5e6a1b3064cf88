#!/usr/bin/env python3
"""Benchmark: one process per image (the original method) vs one-process batch
labelling, in both preprocessing modes, vs a bare Interpreter.invoke() loop (the
limit), where preprocessing time goes per step, and the peak memory of batch
labelling for a small and a large test set.

Builds a MobileNetV2-sized float TFLite model (random weights) and generated
614x583 JPEG thumbnails in a temporary repo/<model>/ (OPSSAT_REPO), so it runs
offline. Quick run (< 2 minutes): ``bench/bench_label.py --quick``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from opssat.data.preprocess import PreprocessOptions
from opssat.onboard import smartcam

PROJECT = Path(__file__).resolve().parent.parent

MODEL = "bench"
#: Batch labelling's target: at most this many times slower than the bare invoke loop.
TARGETS = {"ground": 1.2, "onboard": 1.5}
LABELS = list(smartcam.DEFAULT_LABELS)
#: Distinct generated thumbnails; the N test files cycle through them (decoding cost
#: does not depend on the content repeating, generating 5,000 scenes would).
DISTINCT_IMAGES = 60
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "opssat-bench" / (
    "mobilenet_v2_224_3class.tflite")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000,
                        help="test images for batch labelling and the bare loop "
                        "(default: %(default)s)")
    parser.add_argument("--subset", type=int, default=20,
                        help="images classified one process each (default: %(default)s)")
    parser.add_argument("--rss_images", type=str, default="200,5000",
                        help="comma-separated test-set sizes whose peak RSS is measured "
                        "(default: %(default)s; empty to skip)")
    parser.add_argument("--num_threads", type=int, default=None,
                        help="interpreter threads for every method (default: LiteRT's)")
    parser.add_argument("--no_tf_baseline", action="store_true",
                        help="skip the per-process run that also imports TensorFlow "
                        "(what the original label_image.py paid)")
    parser.add_argument("--quick", action="store_true",
                        help="--images 200 --subset 5 --rss_images 200,1000 --repeat 1 "
                        "--distinct 12")
    parser.add_argument("--repeat", type=int, default=2,
                        help="interleaved runs of the bare loop and batch; best counts "
                        "(default: %(default)s)")
    parser.add_argument("--distinct", type=int, default=DISTINCT_IMAGES,
                        help="distinct generated JPEGs the test files cycle through "
                        "(default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="where the converted model is kept between runs "
                        "(default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="convert the model again")
    parser.add_argument("--modes", default="ground,onboard",
                        help="comma-separated --preprocess modes to time batch labelling in "
                        "(default: %(default)s)")
    parser.add_argument("--no_steps", action="store_true",
                        help="skip the per-step preprocessing timings")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repo")
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.quick:
        args.images, args.subset, args.rss_images = 200, 5, "200,1000"
        args.repeat, args.distinct = 1, 12
    return args


# --- fixtures ---------------------------------------------------------------------


BUILD_MODEL = """
import sys
import opssat
import tf_keras
from opssat.train import export
model = tf_keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=3)
open(sys.argv[1], "wb").write(export.tflite_bytes(model))
"""


def build_model(path: Path, cache: Path, rebuild: bool) -> str:
    """A MobileNetV2 (224x224x3, 3 classes, random weights) as float TFLite, converted
    in a child process (so TensorFlow never loads here and skews the timings) and
    cached, because conversion takes most of a minute."""
    if rebuild or not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        subprocess.run([sys.executable, "-c", BUILD_MODEL, str(tmp)], cwd=PROJECT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.replace(tmp, cache)
        origin = "built"
    else:
        origin = f"cached in {cache}"
    shutil.copyfile(cache, path)
    return f"{path.stat().st_size / 1e6:.1f} MB, {origin}"


def thumbnails(count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct 614x583 JPEGs: synthetic OPS-SAT scenes when opssat.data.sample
    has them, random noise otherwise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        try:
            from opssat.data.sample import make_thumbnail

            img = make_thumbnail(LABELS[index % len(LABELS)], rng)
        except ImportError:
            img = Image.fromarray(rng.integers(0, 256, (583, 614, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def fill_test_set(model_dir: Path, jpegs: list[bytes], count: int) -> list[Path]:
    """Replace data/test with ``count`` files cycling through ``jpegs``."""
    test = model_dir / "data" / "test"
    shutil.rmtree(test, ignore_errors=True)
    files = []
    for index in range(count):
        label = LABELS[index % len(LABELS)]
        path = test / label / f"img_msec_{1_608_500_000_000 + index * 1000}_2_thumbnail.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpegs[index % len(jpegs)])
        files.append(path)
    return files


# --- measurements ----------------------------------------------------------------


def run_child(cmd: list[str], env: dict[str, str]
              ) -> tuple[float, int | None, str, float | None]:
    """Run ``cmd``; (wall seconds, its peak RSS in MiB, stdout, CPU seconds).

    The peak RSS comes from /usr/bin/time (a small parent), not from this process's
    rusage: a forked child's high-water mark starts at its parent's size.
    """
    timer = (["/usr/bin/time", "-f", "maxrss_kb=%M cpu_s=%U %S"]
             if Path("/usr/bin/time").exists() else [])
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run([*timer, *cmd], cwd=PROJECT, env=env, stdout=out, stderr=err)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:3])} failed:\n{stderr[-2000:]}")
    match = re.search(r"maxrss_kb=(\d+) cpu_s=([\d.]+) ([\d.]+)", stderr)
    if not match:
        return wall, None, stdout, None
    return wall, int(match.group(1)) // 1024, stdout, float(match.group(2)) + float(match.group(3))


def per_process(files: list[Path], model: Path, labels: Path, env: dict[str, str],
                threads: list[str], import_tf: bool) -> float:
    """Images/s classifying each file in its own ``python label_image.py`` process."""
    script = str(PROJECT / "label_image.py")
    start = time.perf_counter()
    for path in files:
        argv = [script, "--image", str(path), "--model_file", str(model),
                "--label_file", str(labels), *threads]
        if import_tf:
            code = ("import sys, runpy, opssat, tensorflow; sys.argv = sys.argv[1:]; "
                    "runpy.run_path(sys.argv[0], run_name='__main__')")
            cmd = [sys.executable, "-c", code, *argv]
        else:
            cmd = [sys.executable, *argv]
        run_child(cmd, env)
    return len(files) / (time.perf_counter() - start)


def batch(env: dict[str, str], threads: list[str], mode: str = "ground"
          ) -> tuple[float, float, int | None, float | None]:
    """(images/s over the whole process, images/s the script reports, peak RSS MiB,
    CPU ms per image over the whole process) with ``--preprocess mode``."""
    cmd = [sys.executable, str(PROJECT / "batch_label_images.py"), MODEL, "--no_progress",
           "--preprocess", mode, *threads]
    wall, rss, stdout, cpu = run_child(cmd, env)
    images = int(re.search(r"images:\s+(\d+)", stdout).group(1))
    reported = float(re.search(r"\(([\d.]+) images/s\)", stdout).group(1))
    return images / wall, reported, rss, None if cpu is None else 1000 * cpu / images


def bare_loop(files: list[Path], model: Path, num_threads: int | None) -> tuple[float, float]:
    """(images/s, CPU ms per image) of set_tensor + invoke + get_tensor on inputs
    decoded beforehand."""
    from ai_edge_litert.interpreter import Interpreter

    from opssat.data import images

    decoded = [images.load_input(p)[None] for p in files[:DISTINCT_IMAGES]]
    interpreter = Interpreter(model_path=str(model), num_threads=num_threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    for array in decoded[:5]:
        interpreter.set_tensor(inp, array)
        interpreter.invoke()
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(len(files)):
        interpreter.set_tensor(inp, decoded[index % len(decoded)])
        interpreter.invoke()
        interpreter.get_tensor(out)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return len(files) / wall, 1000 * cpu / len(files)


def preprocessing_steps(jpegs: list[bytes], repeat: int = 3) -> dict[str, float]:
    """CPU ms per image of each preprocessing step, one thread: where decoding time goes."""
    from opssat.data import images
    from opssat.onboard import chain

    folder = Path(tempfile.mkdtemp(prefix="opssat_steps_"))
    try:
        paths = []
        for index, data in enumerate(jpegs):
            paths.append(folder / f"{index}.jpeg")
            paths[-1].write_bytes(data)
        size = smartcam.INPUT_SIZE
        onboard_mode = PreprocessOptions("onboard").preprocessing()
        loaded = [chain.stb_load(p, 1, size) for p in paths]
        resized = [chain.stb_resize(x, size) for x in loaded]
        coded = [chain.stb_write_jpeg(x) for x in resized]
        steps = {
            "ground (Pillow decode + bilinear)": lambda i: images.load_pixels(paths[i]),
            "onboard stb_load": lambda i: chain.stb_load(paths[i], 1, size),
            "onboard stb_resize": lambda i: chain.stb_resize(loaded[i], size),
            "onboard stb_write_jpeg": lambda i: chain.stb_write_jpeg(resized[i]),
            "onboard ujpeg_decode": lambda i: chain.ujpeg_decode(coded[i]),
            "onboard whole chain": lambda i: images.load_pixels(paths[i], onboard_mode),
        }
        timings = {}
        for name, step in steps.items():
            best = float("inf")
            for _ in range(repeat):
                start = time.process_time()
                for index in range(len(paths)):
                    step(index)
                best = min(best, time.process_time() - start)
            timings[name] = 1000 * best / len(paths)
        return timings
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    args = parse_args()
    rss_sizes = [int(x) for x in args.rss_images.split(",") if x.strip()]
    threads = [] if args.num_threads is None else ["--num_threads", str(args.num_threads)]
    root = Path(tempfile.mkdtemp(prefix="opssat_bench_"))
    env = {**os.environ, "OPSSAT_REPO": str(root)}
    results: dict = {"images": args.images, "subset": args.subset, "cpus": os.cpu_count(),
                     "num_threads": args.num_threads, "repeat": args.repeat}
    try:
        model_dir = root / MODEL
        model_dir.mkdir()
        model, labels = model_dir / "tflite_model.tflite", model_dir / "labels.txt"
        labels.write_text("".join(f"{x}\n" for x in LABELS))
        t0 = time.perf_counter()
        results["model"] = build_model(model, args.cache, args.rebuild)
        jpegs = thumbnails(min(args.distinct, max(args.images, args.subset, *rss_sizes)))
        print(f"model: MobileNetV2 float TFLite ({results['model']}); {len(jpegs)} distinct "
              f"614x583 JPEGs; {time.perf_counter() - t0:.0f} s to prepare", flush=True)
        results["load_before"] = os.getloadavg()[0]
        print(f"{os.cpu_count()} CPUs, load average {results['load_before']:.1f} "
              "(timings below assume the CPUs are otherwise idle)", flush=True)

        files = fill_test_set(model_dir, jpegs, args.images)
        bare, bare_cpu = [], []
        runs: dict[str, dict[str, list]] = {m: {"whole": [], "reported": [], "rss": [], "cpu": []}
                                            for m in args.modes}
        for _ in range(args.repeat):  # interleaved, best of: the CPUs may be shared
            ips, ms = bare_loop(files, model, args.num_threads)
            bare.append(ips)
            bare_cpu.append(ms)
            for mode in args.modes:
                for key, value in zip(("whole", "reported", "rss", "cpu"),
                                      batch(env, threads, mode), strict=True):
                    runs[mode][key].append(value)
        results.update(bare_loop_ips=max(bare), bare_cpu_ms=min(bare_cpu), modes={})
        print(f"bare invoke loop:           {max(bare):8.1f} images/s ({args.images} images, "
              f"inputs decoded beforehand; {min(bare_cpu):.1f} CPU ms/image)")
        for mode in args.modes:
            run = runs[mode]
            figures = {"batch_ips": max(run["whole"]), "batch_reported_ips": max(run["reported"]),
                       "batch_rss_mib": run["rss"][-1],
                       "batch_cpu_ms": min(c or 0 for c in run["cpu"])}
            figures["bare_over_batch"] = max(bare) / figures["batch_ips"]
            figures["bare_over_batch_reported"] = max(bare) / figures["batch_reported_ips"]
            results["modes"][mode] = figures
            print(f"batch_label_images.py --preprocess {mode}: {figures['batch_ips']:8.1f} "
                  f"images/s (whole process; {figures['batch_reported_ips']:.1f} images/s after "
                  f"start-up; {figures['batch_cpu_ms']:.1f} CPU ms/image); bare loop / batch "
                  f"{figures['bare_over_batch_reported']:.2f}x after start-up (target <= "
                  f"{TARGETS.get(mode, 1.5)}x)", flush=True)
        main_mode = "ground" if "ground" in args.modes else args.modes[0]
        whole = runs[main_mode]["whole"]
        reported = runs[main_mode]["reported"]
        results.update(batch_ips=max(whole), batch_reported_ips=max(reported),
                       batch_rss_mib=runs[main_mode]["rss"][-1],
                       batch_cpu_ms=results["modes"][main_mode]["batch_cpu_ms"])
        if not args.no_steps:
            results["step_cpu_ms"] = preprocessing_steps(jpegs[:12])
            print("preprocessing, CPU ms per image (one thread):")
            for name, ms in results["step_cpu_ms"].items():
                print(f"  {name:34s} {ms:6.1f}")
        subset = files[: args.subset]
        results["per_process_ips"] = per_process(subset, model, labels, env, threads, False)
        print(f"one process per image:      {results['per_process_ips']:8.2f} images/s "
              f"(label_image.py on LiteRT, {len(subset)} images)", flush=True)
        if not args.no_tf_baseline:
            results["per_process_tf_ips"] = per_process(subset, model, labels, env, threads,
                                                        True)
            print(f"  ... also importing TF:    {results['per_process_tf_ips']:8.2f} images/s "
                  "(the original label_image.py's cost per image)", flush=True)

        print()
        results["speedup_vs_per_process"] = max(whole) / results["per_process_ips"]
        print(f"batch / one process per image (LiteRT): {results['speedup_vs_per_process']:7.1f}x"
              " (target >= 100x)")
        if "per_process_tf_ips" in results:
            results["speedup_vs_per_process_tf"] = max(whole) / results["per_process_tf_ips"]
            print(f"batch / one process per image (TF):     "
                  f"{results['speedup_vs_per_process_tf']:7.1f}x (target >= 100x)")
        results["bare_over_batch"] = max(bare) / max(whole)
        results["bare_over_batch_reported"] = max(bare) / max(reported)
        print(f"bare loop / batch ({main_mode}):             {results['bare_over_batch']:7.2f}x "
              f"whole process, {results['bare_over_batch_reported']:.2f}x after start-up "
              f"(target <= {TARGETS.get(main_mode, 1.5)}x)")

        rss_by_size = {}
        for size in rss_sizes:
            fill_test_set(model_dir, jpegs, size)
            t0 = time.perf_counter()
            _, ips, peak, _ = batch(env, threads, main_mode)
            rss_by_size[size] = peak
            print(f"peak RSS of batch_label_images.py, {size:5d} images: {peak} MiB "
                  f"({ips:.1f} images/s, {time.perf_counter() - t0:.0f} s)", flush=True)
        results["peak_rss_mib"] = {str(k): v for k, v in rss_by_size.items()}
        results["load_after"] = os.getloadavg()[0]
        known = [v for v in rss_by_size.values() if v]
        if len(known) >= 2:
            results["rss_growth"] = max(known) / min(known) - 1
            print(f"peak RSS growth: {100 * results['rss_growth']:.1f} % (target <= 10 %)")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
