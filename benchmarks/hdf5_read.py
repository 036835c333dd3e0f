"""Reading a feature-cache-like HDF5 file vs the same bytes from a raw .npy (memory map).

    python benchmarks/hdf5_read.py [--frames 64] [--channels 512] [--hw 40 71] [--rounds 3]

Writes float16 (N, C, h, w) twice, side by side in one folder: an HDF5 dataset chunked per frame
``(1, C, h, w)``, uncompressed (the layout of ``results/region_model/*/features/*.h5``, written
the way ``pipeline.region.features`` writes it: no compression), and a ``.npy`` file read through
``np.load(mmap_mode="r")``. Then reads every frame, one frame per call (what a DataLoader
worker does), in sequential and in random order, alternating the formats for ``--rounds``
rounds, and prints the median throughput and the HDF5 / npy ratio. Each frame read is copied
to a fresh array (``np.array``) so the memory map cannot cheat by reading nothing.

Both files were just written, so they are in the page cache: this measures the per-read cost
of the formats (HDF5 library and chunk lookup vs a memcpy), not the disk. Cold-cache reads
from a network filesystem are dominated by the filesystem, where the two formats read the same
contiguous bytes per frame. The default 512 channels at 40 x 71 (2.8 MiB per frame) is
region_model.frontend.reduce_to = 256 per stream at the paper's A2D size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from machine import machine_facts as shared_machine_facts  # benchmarks/machine.py


def machine_facts() -> str:
    return shared_machine_facts(f", h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}),"
                                f" numpy {np.__version__}")


def write_files(folder: Path, n: int, c: int, h: int, w: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    h5_path, npy_path = folder / "features.h5", folder / "features.npy"
    mm = np.lib.format.open_memmap(npy_path, mode="w+", dtype=np.float16, shape=(n, c, h, w))
    with h5py.File(h5_path, "w") as f:
        ds = f.create_dataset("features", shape=(n, c, h, w), dtype=np.float16,
                              chunks=(1, c, h, w))
        for i in range(n):  # ReLU-like features: about half zeros
            frame = np.maximum(rng.standard_normal((c, h, w), np.float32), 0).astype(np.float16)
            ds[i] = frame
            mm[i] = frame
    mm.flush()
    del mm
    return h5_path, npy_path


def read_h5(path: Path, order: np.ndarray, rdcc_nbytes: int | None = None) -> float:
    t0 = time.perf_counter()
    kw = {} if rdcc_nbytes is None else {"rdcc_nbytes": rdcc_nbytes}
    with h5py.File(path, "r", locking=False, **kw) as f:
        ds = f["features"]
        for i in order:
            frame = ds[int(i)]
            assert frame.dtype == np.float16
    return time.perf_counter() - t0


def read_npy(path: Path, order: np.ndarray) -> float:
    t0 = time.perf_counter()
    mm = np.load(path, mmap_mode="r")
    for i in order:
        frame = np.array(mm[int(i)])  # copy: the bytes are really read
        assert frame.dtype == np.float16
    del mm
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--hw", type=int, nargs=2, default=[40, 71], metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="folder for the two files (default: a temp dir)")
    args = parser.parse_args(argv)
    n, c, (h, w) = args.frames, args.channels, args.hw
    frame_mib = c * h * w * 2 / 2**20
    print("# hdf5_read: HDF5 (chunk per frame) vs raw .npy memory map, same bytes")
    print(machine_facts())
    print(f"data: {n} frames x ({c}, {h}, {w}) float16 = {frame_mib:.2f} MiB per frame, "
          f"{n * frame_mib:.0f} MiB per file; warm page cache; {args.rounds} rounds, median")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        h5_path, npy_path = write_files(Path(tmp), n, c, h, w)
        print(f"files: {h5_path.stat().st_size / 2**20:.1f} MiB HDF5, "
              f"{npy_path.stat().st_size / 2**20:.1f} MiB npy")
        orders = {"sequential": np.arange(n),
                  "random": np.random.default_rng(1).permutation(n)}
        for reader in (read_h5, read_npy):  # warm-up: page cache, library init
            reader(h5_path if reader is read_h5 else npy_path, orders["sequential"])
        # HDF5 twice: the default chunk cache (8 MiB in HDF5 2.0: a frame's chunk is read into
        # it, then copied out) and rdcc_nbytes=0 (no chunk cache: read straight into the array).
        readers = {"HDF5": lambda o: read_h5(h5_path, o),
                   "HDF5 no chunk cache": lambda o: read_h5(h5_path, o, rdcc_nbytes=0),
                   "npy memmap": lambda o: read_npy(npy_path, o)}
        print(f"\n{'order':11s} {'reader':20s} {'MiB/s':>7s} {'ms/frame':>9s} {'time / npy':>11s}")
        for name, order in orders.items():
            times: dict[str, list[float]] = {k: [] for k in readers}
            for _ in range(args.rounds):  # alternate, so load changes hit all alike
                for key, reader in readers.items():
                    times[key].append(reader(order))
            med = {k: statistics.median(v) for k, v in times.items()}
            for key in readers:
                print(f"{name:11s} {key:20s} {n * frame_mib / med[key]:7.0f} "
                      f"{1000 * med[key] / n:9.2f} {med[key] / med['npy memmap']:11.2f}")
    load = os.getloadavg()
    print(f"\nload average (1/5/15 min) at end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
