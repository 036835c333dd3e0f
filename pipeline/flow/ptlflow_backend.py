"""Flow backend ``ptlflow``: any model of ptlflow (default FlowNetS, as Dang et al. 2018).

ptlflow is imported here only, when the backend is built: the import costs 4-6 s and ~400 MB, so
one process handles a whole video. Weights come from ``flow.checkpoint``: a local file (a dict
with ``state_dict`` and optionally ``hyper_parameters``, e.g. a Lightning checkpoint) or a
ptlflow checkpoint name such as ``things`` (downloaded into the torch hub cache on first use).
A local file, and a named checkpoint already in the hub cache, is first read through
:func:`pipeline.checkpoint.read` (``weights_only=True``), so that a pickle of Python objects,
a truncated or a text file is refused in one line naming it before ptlflow sees it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline import checkpoint as checkpoint_module
from pipeline.errors import DataError

log = logging.getLogger("pipeline.flow")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("flow.device is 'cuda' but torch sees no CUDA device")
    return torch.device(device)


def _looks_like_path(checkpoint: str) -> bool:
    p = Path(checkpoint)
    return p.suffix in {".ckpt", ".pth", ".pt", ".tar"} or len(p.parts) > 1


def _checked_state(path: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a ptlflow/Lightning checkpoint file, read safely."""
    obj = checkpoint_module.read(path, "flow checkpoint")
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise DataError(path, "not a ptlflow checkpoint (expected a dict with 'state_dict', "
                              "e.g. torch.save({'state_dict': model.state_dict()}, path))")
    return checkpoint_module.state_dict_of(obj["state_dict"], path)


def _cached_file(ptlflow, model: str, name: str) -> Path | None:
    """The hub-cache file of the named checkpoint ``name`` of ``model``, if downloaded."""
    try:
        url = ptlflow.get_model_reference(model).pretrained_checkpoints.get(name)
    except Exception:  # unknown model: get_model below says so
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(str(url)).name if url else None
    return path if path is not None and path.is_file() else None


class PtlflowFlow:
    """A ptlflow model on RGB frames.

    Call with ``first``, ``second``: (B, H, W, 3) uint8 RGB; returns (B, H, W, 2) float32
    (dx, dy) in input pixels. The model gets ``{"images": (B, 2, 3, H, W)}`` float32 0..1 in
    **BGR** order (ptlflow's convention, inherited from the original Caffe/cv2 models) and
    returns ``"flows"`` (B, 1, 2, H, W).
    """

    name = "ptlflow"

    def __init__(self, model: str, checkpoint: str | None, device: str = "auto",
                 batch_size: int = 4) -> None:
        if not checkpoint:
            # Random weights give 9-50 px errors (shared/docs/environment.md): never cache that.
            raise ValueError("flow.backend 'ptlflow' needs flow.checkpoint (a file or a ptlflow "
                             "checkpoint name such as 'things')")
        if _looks_like_path(checkpoint) or Path(checkpoint).exists():
            state = _checked_state(Path(checkpoint))
        else:
            state = None
        import ptlflow  # deferred: heavy import, only this backend needs it

        if state is None:
            cached = _cached_file(ptlflow, model, checkpoint)
            state = _checked_state(cached) if cached is not None else None
        try:
            net = ptlflow.get_model(model, ckpt_path=checkpoint)
        except ValueError as exc:  # unknown model or checkpoint name
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"ptlflow model {model!r} / checkpoint {checkpoint!r}: "
                             f"{first}") from None
        except (RuntimeError, KeyError, OSError, EOFError) as exc:  # wrong keys, download
            if state is not None:  # say which keys do not fit, in one line
                checkpoint_module.load_state(ptlflow.get_model(model), state, checkpoint)
            raise DataError(checkpoint, f"cannot load into ptlflow model {model!r} "
                                        f"({type(exc).__name__}; offline, give a local "
                                        "checkpoint file)") from None
        self.device = resolve_device(device)
        self.net = net.eval().to(self.device)
        self.model = model
        self.checkpoint = str(checkpoint)
        self.batch_size = int(batch_size)
        log.info("ptlflow %s from %s on %s", model, checkpoint, self.device)

    @torch.inference_mode()
    def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        pair = np.stack([first, second], axis=1)[..., ::-1]  # (B, 2, H, W, 3) RGB -> BGR
        images = torch.from_numpy(np.ascontiguousarray(pair)).to(self.device)
        images = images.permute(0, 1, 4, 2, 3).float().div_(255.0)  # (B, 2, 3, H, W)
        flows = self.net({"images": images})["flows"]  # (B, 1, 2, H, W)
        if flows.shape[-2:] != images.shape[-2:]:
            raise RuntimeError(f"ptlflow {self.model} returned {tuple(flows.shape)} for "
                               f"{tuple(images.shape)}")
        return flows[:, 0].permute(0, 2, 3, 1).float().cpu().numpy()  # (B, H, W, 2)
