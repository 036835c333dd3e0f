"""The one way the pipeline reads a weights file, and resolves a weights setting.

Every checkpoint, state dict or resume state the pipeline is given or writes is read here, with
``torch.load(path, map_location="cpu", weights_only=True)``: a file whose pickle would build
arbitrary Python objects (and so could run code) is refused, never loaded. Every failure is a
:class:`pipeline.errors.DataError` naming the file and the problem in one line, with what to do;
torch's own message is not passed through (it advises turning ``weights_only`` off).

Public API:

- :func:`read` ``(path, what="weights file") -> object``: the loaded object (a dict, mostly).
- :func:`state_dict_of` ``(obj, path) -> dict[str, Tensor]``: the state dict inside a loaded
  file (bare, or under ``"model"`` / ``"state_dict"``).
- :func:`read_state_dict` ``(path) -> dict[str, Tensor]``: both at once.
- :func:`load_state` ``(module, state, path, ...)``: ``module.load_state_dict`` with missing,
  unexpected and mis-shaped keys reported as one DataError.
- :func:`is_weights_name`, :func:`torchvision_weight` ``(name, enum=None) -> WeightsEnum``: a
  torchvision weights name in any spelling ``torchvision.models.get_weight`` accepts
  (``ResNet101_Weights.IMAGENET1K_V1``), or a member name of ``enum`` (``IMAGENET1K_V1``,
  ``DEFAULT``) where the caller knows the model; a wrong name lists the valid ones.
- :func:`resolve` ``(spec, enum=None) -> (state dict, description)``: a weights setting (a local
  file or a torchvision name; callers handle null) to its tensors. torchvision weights are
  fetched into torch's hub cache (``$TORCH_HOME/hub/checkpoints/<file name of the URL>``) on
  first use and then read through :func:`read` like any file; offline, put the file there or
  give its path instead of the name.

A resume state is read the same way: ``state = checkpoint.read(path, "resume state")``.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.errors import DataError

__all__ = ["RESAVE", "read", "state_dict_of", "read_state_dict", "load_state",
           "is_weights_name", "torchvision_weight", "resolve", "hub_cache_path"]

#: What to do with a file that holds more than tensors.
RESAVE = "re-save only the state dict with torch.save(model.state_dict(), path)"

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since 1.6
_PICKLE_PROTO = b"\x80"  # torch.save(_use_new_zipfile_serialization=False) and raw pickles
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?$")
_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar", ".bin", ".pkl")


def read(path: str | Path, what: str = "weights file") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, failures as one DataError.

    Args:
        what: the kind of file, for the message ("segmenter checkpoint", "resume state", ...).

    Raises:
        DataError: the file is missing, empty, truncated, not a PyTorch file (e.g. text), or
            holds pickled Python objects other than tensors and plain containers.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, f"{what} is a directory, not a file")
    if not path.is_file():
        raise DataError(path, f"{what} not found")
    with path.open("rb") as f:
        head = f.read(4)
    unreadable = f"not a readable PyTorch {what}"
    if not head:
        raise DataError(path, f"{unreadable}: the file is empty; {RESAVE}")
    if not head.startswith((_ZIP_MAGIC, _PICKLE_PROTO)):
        raise DataError(path, f"{unreadable}: neither torch.save's zip format nor a pickle (a "
                              f"text file or another format?); {RESAVE}")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": noise next to our error
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        culprit = f" (it names {found.group(1)})" if found else ""
        raise DataError(path, f"refused to load {what}: it holds pickled Python objects other "
                              f"than tensors{culprit}, which could run code when unpickled; "
                              f"{RESAVE}") from None
    except Exception as exc:  # zip, EOF and format errors share no base class
        kind = "its zip archive is truncated or corrupted" if head.startswith(_ZIP_MAGIC) \
            else "truncated, or a pickle of another kind"
        raise DataError(path, f"{unreadable}: {kind} ({type(exc).__name__}); copy or write it "
                              f"again, or {RESAVE}") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def state_dict_of(obj: Any, path: str | Path) -> dict[str, Tensor]:
    """The state dict inside a loaded weights file (bare, or under ``model`` / ``state_dict``)."""
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if _is_state_dict(obj.get(key)):
                return obj[key]
        keys = sorted(map(str, obj))[:8]
        raise DataError(path, f"no state dict found (a dict with keys {keys}; expected str -> "
                              f"tensor, or such a dict under 'model' or 'state_dict'); {RESAVE}")
    raise DataError(path, f"no state dict found (the file holds a {type(obj).__name__}); "
                          f"{RESAVE}")


def read_state_dict(path: str | Path, what: str = "weights file") -> dict[str, Tensor]:
    """:func:`read` then :func:`state_dict_of`."""
    return state_dict_of(read(path, what), path)


def _listing(items: list[str], n: int = 4) -> str:
    return f"{items[:n]}{' ...' if len(items) > n else ''} ({len(items)})"


def load_state(module: nn.Module, state: dict[str, Tensor], path: str | Path, *,
               strict: bool = True, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """``module.load_state_dict(state)``; a mismatch is one DataError naming ``path``.

    Args:
        strict: False tolerates missing and unexpected keys; shapes always must match.
        ignore_prefixes: keys (of either side) left out, e.g. ``"fc."`` of an ImageNet ResNet.

    ``num_batches_tracked`` counters may be absent (FrozenBatchNorm2d files have none).
    """
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(ignore_prefixes)}
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
                    if k in own and state[k].shape != own[k].shape)
    problems = [f"{name} {_listing(items)}" for name, items in
                (("missing", missing if strict else []),
                 ("unexpected", unexpected if strict else []), ("shape mismatch", shapes))
                if items]
    if problems:
        raise DataError(path, f"the weights do not fit the {type(module).__name__} "
                              f"(another architecture or config?): " + "; ".join(problems))
    try:
        module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    except RuntimeError as exc:  # e.g. dtype conversion errors
        first = str(exc).splitlines()[0][:200]
        raise DataError(path, f"the weights do not load into the {type(module).__name__}: "
                              f"{first}") from None


def is_weights_name(spec: str | Path) -> bool:
    """Whether ``spec`` is meant as a torchvision weights name rather than a file path."""
    s = str(spec)
    return (not Path(s).exists() and _NAME.match(s) is not None
            and not s.lower().endswith(_FILE_SUFFIXES))


def torchvision_weight(name: str, enum: type | None = None) -> Any:
    """The torchvision ``WeightsEnum`` member called ``name``.

    Args:
        name: ``Enum.MEMBER`` as ``torchvision.models.get_weight`` accepts it, or, with
            ``enum`` given, a bare member name (``IMAGENET1K_V1``, ``DEFAULT``).
        enum: the weights enum the caller's model needs (e.g. ``ResNet101_Weights``); a name of
            another enum is refused.

    Raises:
        DataError: naming ``name``, listing the valid names.
    """
    import torchvision

    if enum is not None:
        try:
            return enum.verify(name)
        except (KeyError, ValueError, TypeError):
            valid = [f"{enum.__name__}.{m}" for m in [*enum.__members__]]
            raise DataError(name, f"not a weights name of {enum.__name__}; valid: "
                                  f"{', '.join(valid)}, or a local file") from None
    try:
        return torchvision.models.get_weight(name)
    except (KeyError, ValueError):
        prefix = name.split(".")[0]
        enums = [k for k in dir(torchvision.models) if k.endswith("_Weights")]
        owner = getattr(torchvision.models, prefix, None) if prefix in enums else None
        if owner is not None:
            valid = ", ".join(f"{prefix}.{m}" for m in owner.__members__)
        else:
            near = [k for k in enums if k.lower()[:5] == prefix.lower()[:5]] or enums[:6]
            valid = "names of the form Enum.MEMBER with Enum one of " + ", ".join(near)
        raise DataError(name, f"not a torchvision weights name; valid: {valid}; or give a "
                              "local file") from None


def hub_cache_path(weights: Any) -> Path:
    """Where torch's hub cache keeps the file of torchvision ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _fetch(weights: Any, label: str) -> Path:
    path = hub_cache_path(weights)
    if path.is_file():
        return path
    found = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(path),
                                       hash_prefix=found.group(1) if found else None,
                                       progress=False)
    except Exception as exc:  # URLError (offline), hash mismatch, unwritable cache
        raise DataError(label, f"cannot download torchvision weights ({type(exc).__name__}); "
                               f"offline, fetch {weights.url} elsewhere and put it at {path}, "
                               "or give the local file's path instead of the name") from None
    return path


def resolve(spec: str | Path, enum: type | None = None, what: str = "weights file"
            ) -> tuple[dict[str, Tensor], str]:
    """The tensors of a weights setting: a local file or a torchvision weights name.

    Args:
        spec: a path, or a name (see :func:`torchvision_weight`).
        enum: the weights enum expected for a name (enables bare member names).

    Returns:
        (state dict, a description for logs and provenance: the path or ``Enum.MEMBER``).

    Raises:
        DataError: a missing or unreadable file, an unknown name, or a failed download.
    """
    if is_weights_name(spec):
        weights = torchvision_weight(str(spec), enum)
        label = f"{type(weights).__name__}.{weights.name}"
        return read_state_dict(_fetch(weights, label), f"cached {label}"), label
    return read_state_dict(spec, what), str(spec)
