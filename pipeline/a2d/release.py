"""Paths of an A2D release folder (``Release/``) and the listing of annotated frames."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.a2d.videoset import check_video_id
from pipeline.errors import DataError

_FRAME_FILE = re.compile(r"^(\d{5})\.mat$")


@dataclass(frozen=True)
class Release:
    """An A2D release root: ``videoset.csv``, ``clips320H/``, ``Annotations/{mat,col}/``.

    ``instances`` is the A2D-Sentences ``a2d_annotation_with_instances`` folder, if any.
    Every per-video path goes through :func:`check_video_id`, so an id can never point outside.
    """

    root: Path
    instances: Path | None = None

    @classmethod
    def at(cls, root: str | Path, instances: str | Path | None = None) -> Release:
        root = Path(root)
        if not root.is_dir():
            raise DataError(root, "A2D release folder not found")
        if instances is None:
            for cand in (root / "a2d_annotation_with_instances",
                         root.parent / "a2d_annotation_with_instances"):
                if cand.is_dir():
                    instances = cand
                    break
        return cls(root, Path(instances) if instances else None)

    @property
    def videoset(self) -> Path:
        return self.root / "videoset.csv"

    def clip(self, vid: str) -> Path:
        return self.root / "clips320H" / f"{check_video_id(vid, self.root)}.mp4"

    def mat_dir(self, vid: str) -> Path:
        return self.root / "Annotations" / "mat" / check_video_id(vid, self.root)

    def mat(self, vid: str, frame: int) -> Path:
        return self.mat_dir(vid) / f"{frame:05d}.mat"

    def col(self, vid: str, frame: int) -> Path:
        return self.root / "Annotations" / "col" / check_video_id(vid, self.root) / f"{frame:05d}.png"

    def instance_h5(self, vid: str, frame: int) -> Path | None:
        if self.instances is None:
            return None
        path = self.instances / check_video_id(vid, self.root) / f"{frame:05d}.h5"
        return path if path.is_file() else None

    def annotated_frames(self, vid: str) -> list[int]:
        """1-based ids of the annotated frames, from listing ``Annotations/mat/<vid>/*.mat``."""
        folder = self.mat_dir(vid)
        if not folder.is_dir():
            return []
        frames = []
        for p in folder.iterdir():
            m = _FRAME_FILE.match(p.name)
            if m is None:
                raise DataError(p, "unexpected file in an annotation folder (want NNNNN.mat)")
            frame = int(m.group(1))
            if frame < 1:
                raise DataError(p, "frame ids are 1-based; 00000 is not a frame")
            frames.append(frame)
        return sorted(frames)
