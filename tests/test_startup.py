"""Start-up hygiene: the torch-free stages never import torch (``import torch`` costs seconds in
every job of a per-video stage; issue 12). They run for real here, on the tiny release, in one
fresh interpreter: index, frames, flow (backend dis), masks (source gt); evaluate, tables,
inspect and report are imported and parse their ``--help``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import contextlib, json, sys
    from pathlib import Path

    release, work = Path(sys.argv[1]), Path(sys.argv[2])
    from pipeline.index import main as index_main
    from pipeline.index import read_index
    from pipeline.frames import main as frames_main
    from pipeline.flow.__main__ import main as flow_main
    from pipeline.masks.run import main as masks_main
    index = work / "frames.csv"
    assert index_main(["--release", str(release), "--out", str(index)]) == 0
    video = sorted(read_index(index).video.unique())[0]
    frames, flow, masks = (work / f"{s}.h5" for s in ("frames", "flow", "masks"))
    assert frames_main(["--release", str(release), "--index", str(index), f"--video={video}",
                        "--out", str(frames)]) == 0
    assert flow_main(["--frames", str(frames), "--out", str(flow),
                      "--config-json", json.dumps({"backend": "dis"})]) == 0
    assert masks_main([f"--video={video}", "--out", str(masks), "--source", "gt",
                       "--index", str(index), "--release", str(release), "--threads", "1"]) == 0
    import importlib
    for name in ("pipeline.evaluate", "pipeline.tables", "pipeline.inspect",
                 "pipeline.report.__main__", "pipeline.report.timing"):
        module = importlib.import_module(name)
        with contextlib.redirect_stdout(None), contextlib.suppress(SystemExit):
            module.main(["--help"])
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                            ("torch", "torchvision", "ptlflow"))))
""")


def test_torch_free_stages_import_no_torch(tiny_release, tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_release), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "masks.h5").is_file() and (tmp_path / "flow.h5").is_file()
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
