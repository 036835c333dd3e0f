"""Write the synthetic dataset as an A2D ``Release/`` folder.

    python -m pipeline.synth --out results/synthetic/Release [--videos N] [--seed S]
                             [--config config.yaml | --config-json JSON]

The folder is built beside ``--out`` and renamed onto it when complete. ``--videos`` and
``--seed`` override the config section ``synthetic``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from pipeline.config import add_config_args, config_from_args
from pipeline.errors import DataError
from pipeline.synth.plan import SynthConfig
from pipeline.synth.writer import generate_release

log = logging.getLogger("pipeline.synth")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Release/ folder to write")
    parser.add_argument("--videos", type=int, help="number of videos (overrides the config)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    add_config_args(parser, "synthetic")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        cfg = config_from_args(args, SynthConfig, "synthetic")
        overrides = {k: v for k, v in (("videos", args.videos), ("seed", args.seed))
                     if v is not None}
        cfg = dataclasses.replace(cfg, **overrides)
        cfg.check()
        records = generate_release(args.out, cfg)
    except (DataError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    n_test = sum(r.test for r in records)
    log.info("wrote %s: %d videos (%d train / %d test), %d annotated frames in %.1f s",
             args.out, len(records), len(records) - n_test, n_test,
             sum(r.anno for r in records), time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
