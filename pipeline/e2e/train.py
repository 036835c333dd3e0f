"""Stage ``e2e_train``: train the end-to-end joint model (Ji et al. 2018) or one of its ablations.

Every annotated frame of the train split is one training item: a clip of ``num_frames`` RGB
frames and flows (:class:`pipeline.e2e.data.ClipFrames`) with the centre frame's GT instances.
The loss is eq. (1) (:class:`pipeline.e2e.loss.MultitaskLoss`, weights ``loss_weights``),
optimised with SGD. The loop is the shared resumable engine :class:`pipeline.training.engine.Trainer`
(data order a pure function of seed and step, resume state every ``checkpoint_every`` steps,
NaN guard naming step and frames, AMP on CUDA, loss curves).

Variants (``--variant``): the keys of :data:`pipeline.e2e.model.ABLATIONS` and ``joint_off``
("w/o joint training", section 4.3): the full model trained branch by branch, first the actor
branch (shared appearance backbone, RPN, box / actor / mask heads) for ``iterations`` steps, then
the action branch (motion backbone, temporal layers, action head) for ``iterations`` steps with
the actor branch frozen (its BatchNorm statistics included). ``--zero-shot-actor`` withholds the
action labels of one actor's instances (section 4.4); its actor labels, boxes and masks stay.

    python -m pipeline.e2e.train --release DIR --index results/index/frames.csv \\
        --frames-dir results/frames --flow-dir results/flow --variant full \\
        --out results/e2e/full/model.pt [--zero-shot-actor adult] [--config-json JSON]

Writes ``--out`` (checkpoint, see :mod:`pipeline.e2e.config`), the loss curves ``--loss-csv`` /
``--loss-png`` (default ``loss.csv`` / ``loss.png`` beside ``--out``) and, while training,
``<out stem>.resume.pt`` (plus ``<out stem>.actor.pt``, the finished actor phase of
``joint_off``); rerunning a killed job resumes there. Under ``torchrun --nproc_per_node N`` it
trains on N GPUs (:mod:`pipeline.distributed`; ``batch_size`` is the global batch) and only
rank 0 writes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline import checkpoint, distributed
from pipeline.a2d.classes import ACTORS
from pipeline.atomic import atomic_path
from pipeline.cli import run_stage, setup_logging
from pipeline.config import add_config_args, config_from_args
from pipeline.e2e.config import (
    VARIANTS, E2EConfig, build_and_initialise, criterion, resolve_device, save_checkpoint,
)
from pipeline.e2e.data import ClipFrames
from pipeline.e2e.loss import MultitaskLoss
from pipeline.e2e.model import ActorActionRCNN
from pipeline.errors import DataError
from pipeline.index import read_index
from pipeline.provenance import config_hash
from pipeline.region.data import collate, describe_batch, frame_records
from pipeline.training import determinism
from pipeline.training.curves import write_curves
from pipeline.training.engine import RunSpec, Trainer

log = logging.getLogger("pipeline.e2e.train")

#: joint_off phases: (branch trained, branch frozen)
PHASES = (("actor", "action"), ("action", "actor"))


def side_paths(out: Path) -> dict[str, Path]:
    """Files written beside a checkpoint: resume state and the finished actor phase."""
    return {"resume": out.with_name(f"{out.stem}.resume.pt"),
            "actor_phase": out.with_name(f"{out.stem}.actor.pt"),
            "actor_resume": out.with_name(f"{out.stem}.actor.resume.pt")}


def multitask_loss_fn(crit: MultitaskLoss):
    """Engine loss function: the model's loss terms and their weighted sum under ``"loss"``.

    A non-finite term becomes a NaN total, so that the engine stops naming the step and frames.
    """
    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        device = batch["images"][0].device
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch["target"]]
        terms = model(batch["images"], batch.get("flows"), targets)
        try:
            total = crit(terms)
        except FloatingPointError:
            total = torch.full((), float("nan"), device=device)
        return {"loss": total, **terms}
    return loss_fn


def freeze_branch_mode(model: ActorActionRCNN, frozen: str | None):
    """Training mode with the BatchNorm layers of the frozen branch in eval mode (their running
    statistics are weights too: a frozen branch must not drift while the other one trains)."""
    def train_mode(m: nn.Module) -> None:
        m.train()
        if frozen == "actor":
            model.appearance.eval()
        elif frozen == "action" and model.motion is not None:
            model.motion.eval()
    return train_mode


def _trainer(model, cfg: E2EConfig, dataset, *, crit: MultitaskLoss, state_path: Path,
             config_sha256: str, frozen: str | None) -> Trainer:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    device = next(model.parameters()).device
    spec = RunSpec(iterations=cfg.iterations, batch_size=cfg.batch_size,
                   checkpoint_every=cfg.checkpoint_every, lr_policy=cfg.lr_policy, seed=cfg.seed,
                   device=device, amp=cfg.amp, num_workers=cfg.num_workers,
                   accumulate=cfg.accumulate)
    return Trainer(model, multitask_loss_fn(crit), dataset, optimizer, spec,
                   state_path=state_path, config_sha256=config_sha256, collate=collate,
                   describe=describe_batch, train_mode=freeze_branch_mode(model, frozen))


def _run_joint_off(model: ActorActionRCNN, cfg: E2EConfig, dataset, paths: dict[str, Path],
                   run_sha: str, on_step) -> tuple[dict[str, list[float]], int]:
    """Actor branch, then action branch; the finished actor phase is kept on disk so that a
    job killed in the action phase does not redo it."""
    weights = asdict(cfg.loss_weights)
    history: dict[str, list[float]] = {}
    steps = 0
    for phase, (train, frozen) in enumerate(PHASES, start=1):
        model.set_trainable(train, True)
        model.set_trainable(frozen, False)
        # each phase starts from its own seed, so a resumed run that skips the finished actor
        # phase draws the same random numbers in the action phase as an uninterrupted one
        torch.manual_seed(cfg.seed * 1_000 + phase)
        done = paths["actor_phase"]
        if phase == 1 and done.is_file():
            state = checkpoint.read(done, "actor-phase state")
            if state.get("config_sha256") == run_sha:
                model.load_state_dict(state["model"])
                history = {k: list(v) for k, v in state["history"].items()}
                steps = cfg.iterations
                log.info("actor phase already done: %s", done)
                continue
        # the frozen branch's own loss terms have no trainable parameters left to move; the
        # action term is switched off while the actor branch learns alone
        crit = MultitaskLoss(**{**weights, "action": 0.0}) if train == "actor" else \
            MultitaskLoss(**weights)
        state_path = paths["actor_resume"] if phase == 1 else paths["resume"]
        trainer = _trainer(model, cfg, dataset, crit=crit, state_path=state_path,
                           config_sha256=f"{run_sha}-phase{phase}", frozen=frozen)
        offset = (phase - 1) * cfg.iterations
        h = trainer.fit(None if on_step is None else lambda s, t: on_step(s + offset, t))
        h["step"] = [s + offset for s in h["step"]]
        h["phase"] = [float(phase)] * len(h["step"])
        for k, v in h.items():
            history.setdefault(k, []).extend(v)
        steps += trainer.step
        if phase == 1 and distributed.is_main():
            with atomic_path(done) as tmp:
                torch.save({"model": model.state_dict(), "config_sha256": run_sha,
                            "history": history}, tmp)
        trainer.finish()
    model.set_trainable("actor", True)
    return history, steps


def train_e2e(cfg: E2EConfig, *, release: str | Path, index: str | Path, frames_dir: str | Path,
              flow_dir: str | Path | None, variant: str, out: str | Path,
              zero_shot_actor: int | None = None, loss_csv: str | Path | None = None,
              loss_png: str | Path | None = None, on_step=None) -> dict[str, list[float]]:
    """Train ``variant`` on the train split and write ``out``; returns the loss history."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    out = Path(out)
    paths = side_paths(out)
    device = distributed.local_device(resolve_device(cfg.device))
    records = frame_records(read_index(index), release, split="train")
    if not records:
        raise DataError(index, "no annotated frames in the train split")
    torch.manual_seed(cfg.seed)
    model, init = build_and_initialise(cfg, variant)
    if model.uses_flow and flow_dir is None:
        raise ValueError(f"variant {variant!r} has a motion stream: pass flow_dir")
    dataset = ClipFrames(records, frames_dir=frames_dir,
                         flow_dir=flow_dir if model.uses_flow else None,
                         num_frames=model.num_frames, zero_shot_actor=zero_shot_actor)
    model = model.to(device)
    run_sha = config_hash({"cfg": cfg, "variant": variant, "zero_shot_actor": zero_shot_actor,
                           "n": len(records)})
    zs = f", zero-shot actor {ACTORS[zero_shot_actor - 1]}" if zero_shot_actor else ""
    log.info("e2e %s%s: %d train frames of %d videos, %d steps x %d on %s", variant, zs,
             len(records), len({r.video for r in records}), cfg.iterations, cfg.batch_size, device)
    if variant == "joint_off":
        history, steps = _run_joint_off(model, cfg, dataset, paths, run_sha, on_step)
        schedule = "actor_then_action"
    else:
        trainer = _trainer(model, cfg, dataset, crit=criterion(cfg), state_path=paths["resume"],
                           config_sha256=run_sha, frozen=None)
        history = trainer.fit(on_step)
        steps, schedule = trainer.step, "joint"
    if not distributed.is_main():  # one writer under torchrun
        return history
    loss_csv = Path(loss_csv) if loss_csv else out.with_name("loss.csv")
    loss_png = Path(loss_png) if loss_png else out.with_name("loss.png")
    write_curves(history, loss_csv, loss_png, title=f"e2e {variant}{zs}")
    save_checkpoint(out, model.cpu(), cfg, variant=variant, zero_shot_actor=zero_shot_actor,
                    schedule=schedule, steps=steps, train_frames=len(records),
                    final_loss=history["loss"][-1], init=init.as_meta())
    for key in ("resume", "actor_resume", "actor_phase"):
        paths[key].unlink(missing_ok=True)
    log.info("wrote %s (final loss %.4f)", out, history["loss"][-1])
    return history


def actor_id(name: str) -> int:
    """Actor name (adult..dog) or id 1..7 -> id."""
    if name in ACTORS:
        return ACTORS.index(name) + 1
    if name.isdigit() and 1 <= int(name) <= len(ACTORS):
        return int(name)
    raise argparse.ArgumentTypeError(f"actor must be one of {ACTORS} or 1..{len(ACTORS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.e2e.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, required=True, help="A2D Release/ folder")
    parser.add_argument("--index", type=Path, required=True, help="frame index CSV (stage index)")
    parser.add_argument("--frames-dir", type=Path, required=True, help="folder of frames caches")
    parser.add_argument("--flow-dir", type=Path, help="folder of flow caches (variants with flow)")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--zero-shot-actor", type=actor_id,
                        help="withhold the action labels of this actor's instances (section 4.4)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--loss-csv", type=Path, help="loss curve CSV (default: beside --out)")
    parser.add_argument("--loss-png", type=Path, help="loss curve plot (default: beside --out)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads of the job (the rule passes its threads:)")
    add_config_args(parser, "e2e_model")
    args = parser.parse_args(argv)
    setup_logging()
    determinism.configure(args.threads)
    cfg = config_from_args(args, E2EConfig, "e2e_model")
    with distributed.session(resolve_device(cfg.device)):
        return run_stage(log, train_e2e, cfg, release=args.release, index=args.index,
                         frames_dir=args.frames_dir, flow_dir=args.flow_dir,
                         variant=args.variant, out=args.out,
                         zero_shot_actor=args.zero_shot_actor, loss_csv=args.loss_csv,
                         loss_png=args.loss_png)


if __name__ == "__main__":
    sys.exit(main())
