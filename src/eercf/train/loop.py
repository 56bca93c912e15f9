"""The training loop: data, model, optimiser, steps, validation and checkpoints of a run.

A run folder holds ``log.jsonl`` (one line per step: every loss term, learning rates, gradient
norm, throughput; one line per validation), ``checkpoints/epoch-N/`` after every epoch and
``checkpoints/step-S/`` every ``checkpoint_every`` steps (the latest only), each our model
folder plus ``trainer.pt`` (optimiser, scheduler, sampler, RNG states, step), ``best/`` (the
model with the best validation metric) and ``summary.json``. ``resume`` continues from the
latest checkpoint, reproducing the uninterrupted run.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from ..errors import EercfError
from ..model import LossWeights
from ..paths import frames_dir
from ..weights import save_model
from .distributed import (Distributed, all_gather_with_grad, average_gradients, barrier,
                          broadcast_object, close_distributed, init_distributed)
from .optim import gate_temperatures, make_optimizer, make_scheduler
from .setup import build_model
from .state import (TRAINER_STATE, latest_checkpoint, restore_rng, rng_state, trim_log,
                    write_checkpoint)
from .validation import best_metric_value, calibrate_best, is_better

if TYPE_CHECKING:
    from ..model import Temperatures



class Trainer:
    """One training run into ``out`` with settings ``cfg`` (see ``configs/train/*.json``)."""

    def __init__(self, cfg: dict[str, Any], out: str | Path, dist: Distributed, *,
                 resume: bool = False, progress: bool = True):
        self.cfg, self.dist, self.progress = cfg, dist, progress and dist.main
        self.out = Path(out)
        if cfg["data"] is None:
            raise EercfError("no training data: pass --data FOLDER")
        if cfg["threads"]:
            torch.set_num_threads(int(cfg["threads"]))
        self.autocast = (torch.bfloat16 if cfg["precision"] == "bf16" or (
            cfg["precision"] == "auto" and dist.device.type == "cuda") else None)
        resume_from = latest_checkpoint(self.out / "checkpoints") if resume else None
        if resume and resume_from is None:
            raise EercfError(f"--resume: no checkpoint under {self.out / 'checkpoints'}")
        if not resume and dist.main and (self.out / "checkpoints").exists():
            raise EercfError(f"{self.out} already holds a training run: pass --resume to "
                             "continue it, or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        self._seed_everything(cfg["seed"])
        self.train_records, self.val_records = self._splits()
        self.model = build_model(cfg, self.out, dist, self.train_records, resume_from,
                                 bf16=self.autocast is not None, progress=self.progress)
        self.loss_weights = LossWeights.from_dict(cfg["loss"])
        self._check_sizes()
        self.cache_dir = Path(cfg["cache_dir"]) if cfg["cache_dir"] else frames_dir()
        self.train_records = self._predecode(self.train_records, "train")
        if self.val_records:
            self.val_records = self._predecode(self.val_records, "validation")
        self.views = cfg["caption_views"] or 1
        self.dataset, self.loader = self._train_loader()
        self.steps_per_epoch = len(self.dataset) // cfg["batch_size"]
        if self.steps_per_epoch == 0:
            raise EercfError(f"{len(self.dataset)} training items make no batch of "
                             f"{cfg['batch_size']}: lower --batch-size")
        self.total_steps = self.steps_per_epoch * cfg["epochs"]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg["warmup"], self.total_steps)
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.best: dict[str, Any] | None = None
        if resume_from is not None:
            self._load_trainer_state(resume_from)
        elif dist.main:
            (self.out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            (self.out / "log.jsonl").write_text("")

    # ------------------------------------------------------------------ set-up
    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _splits(self):
        """Training and validation videos: ``val_split`` if named, else ``val_fraction`` of
        the training videos held out (never the test split, which only ``eercf eval`` reads)."""
        from ..data.splits import split_off

        cfg = self.cfg
        train = self._records(cfg["train_split"])
        if not (cfg["validate"] or cfg["calibrate"]):
            return train, []
        if cfg["val_split"] is not None:
            return train, self._records(cfg["val_split"])
        try:
            return split_off(train, cfg["val_fraction"])
        except EercfError:
            if cfg["validate"]:
                raise
            return train, []  # calibration alone is skipped on a collection this small

    def _records(self, split: str):
        from ..data.datasets import load_dataset

        with warnings.catch_warnings():
            if not self.dist.main:
                warnings.simplefilter("ignore")  # rank 0 reports skipped rows once
            return load_dataset(self.cfg["dataset"], self.cfg["data"], split,
                                **self.cfg["dataset_options"])

    def _check_sizes(self) -> None:
        per_step = self.dist.world * self.cfg["grad_accum"]
        if self.cfg["batch_size"] % per_step:
            raise EercfError(f"batch_size {self.cfg['batch_size']} must divide evenly among "
                             f"{self.dist.world} processes x {self.cfg['grad_accum']} "
                             "accumulation steps")
        self.micro_batch = self.cfg["batch_size"] // per_step

    def _predecode(self, records, what: str):
        """Decode every video once into the frame cache (each process a share), so epochs
        read small cached files; videos that fail are reported and left out of the run."""
        from ..data.loader import VideoClips, make_loader

        clips = VideoClips(records, self.model.transform)
        share = list(range(self.dist.rank, len(records), self.dist.world))
        loader = make_loader(clips, batch_size=16, workers=self.cfg["workers"],
                             cache_dir=self.cache_dir, sampler=share)
        failed: list[dict] = []
        with tqdm(total=len(share), desc=f"decode {what} videos", unit="video",
                  file=sys.stderr, disable=not self.progress, dynamic_ncols=True) as bar:
            for batch in loader:
                failed += batch["failed"]
                bar.update(len(batch["index"]) + len(batch["failed"]))
        if self.dist.world > 1:
            parts: list[list[dict]] = [[] for _ in range(self.dist.world)]
            torch.distributed.all_gather_object(parts, failed)
            failed = [f for part in parts for f in part]
        bad = {f["video_id"] for f in failed}
        if self.dist.main:
            for f in failed:
                print(f"eercf train: skipped {what} video {f['video_id']}: {f['reason']}",
                      file=sys.stderr)
        kept = [r for r in records if r.video_id not in bad]
        if not kept:
            raise EercfError(f"none of the {len(records)} {what} videos could be decoded")
        return kept

    def _train_loader(self):
        """``caption_views`` 0: an epoch is every (video, caption) pair once (CLIP4Clip's
        "expanded" captions). K > 0: an epoch is every video once, with K of its captions."""
        from ..data.loader import CaptionPairs, EpochSampler, VideoClips, make_loader

        kind = VideoClips if self.cfg["caption_views"] else CaptionPairs
        dataset = kind(self.train_records, self.model.transform)
        group_size = self.cfg["similar_group"]
        neighbours = None
        if group_size > 1:  # batches of similar videos (one item per video: caption_views > 0)
            from ..data.batching import caption_neighbours
            neighbours = caption_neighbours([r.captions for r in self.train_records],
                                            k=4 * group_size)
        self.sampler = EpochSampler(len(dataset), self.cfg["seed"], num_replicas=self.dist.world,
                                    rank=self.dist.rank, neighbours=neighbours,
                                    group_size=group_size)
        loader = make_loader(dataset, batch_size=self.micro_batch, workers=self.cfg["workers"],
                             seed=self.cfg["seed"], drop_last=True, cache_dir=self.cache_dir,
                             sampler=self.sampler,
                             pin_memory=self.dist.device.type == "cuda")
        return dataset, loader

    def _captions(self, batch: dict[str, Any]) -> list[str]:
        """The batch's captions, video-major (``views`` per video). With caption views each
        video takes the next ``views`` captions of its own fixed shuffle, epoch after epoch,
        so every caption comes round and a resumed run picks the same ones."""
        if not self.cfg["caption_views"]:
            return list(batch["caption"])
        out = []
        for index in batch["index"].tolist():
            captions = self.train_records[index].captions
            order = np.random.default_rng([self.cfg["seed"], index]).permutation(len(captions))
            start = self.epoch * self.views
            out += [captions[order[(start + j) % len(captions)]] for j in range(self.views)]
        return out

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.autocast)

    def _encode(self, batch: dict[str, Any]):
        device = self.dist.device
        with self._autocast():
            video = self.model.encode_video(batch["frames"].to(device, non_blocking=True),
                                            batch["mask"].to(device, non_blocking=True))
            ids = self.model.tokenize(self._captions(batch))
            # the text tower is causal: padding after the last EOT changes nothing, so cut it
            ids = ids[:, :int((ids != 0).sum(1).max())].to(device)
            text = self.model.encode_text(ids).unflatten(0, (-1, self.views))
        return text, video

    def _loss(self, text: torch.Tensor, video, temperatures: "Temperatures") -> dict[str, torch.Tensor]:
        """The loss over the global batch (this process's videos plus everyone else's), for
        text ``[videos, views, D]``: the mean over views of the model's loss."""
        from ..model import VideoFeatures

        if self.dist.world > 1:
            text = all_gather_with_grad(text)
            video = VideoFeatures(video=all_gather_with_grad(video.video),
                                  frames=all_gather_with_grad(video.frames),
                                  temporal=all_gather_with_grad(video.temporal),
                                  patches=all_gather_with_grad(video.patches),
                                  mask=all_gather_with_grad(video.mask))
        views = [self.model.loss(text[:, k], video, self.loss_weights, temperatures)
                 for k in range(self.views)]
        return {key: sum(v[key] for v in views) / self.views for key in views[0]}

    def _backward(self, micro_batches: list[dict[str, Any]],
                  temperatures: "Temperatures") -> dict[str, torch.Tensor]:
        """Gradients of the global-batch loss. With several micro-batches the features are
        first computed without a graph, the loss and its gradients with respect to the
        features are taken over all of them, and each micro-batch is then re-encoded and
        back-propagated with its share: the same gradient as one big batch (negatives
        included), in the memory of one micro-batch."""
        from ..model import VideoFeatures

        if len(micro_batches) == 1:
            losses = self._loss(*self._encode(micro_batches[0]), temperatures)
            losses["total"].backward()
            return losses
        fields = ("video", "frames", "temporal", "patches")
        with torch.no_grad():
            parts = [self._encode(mb) for mb in micro_batches]
        text = torch.cat([t for t, _ in parts]).requires_grad_()
        video = VideoFeatures.cat([v for _, v in parts])
        for name in fields:
            getattr(video, name).requires_grad_()
        losses = self._loss(text, video, temperatures)
        losses["total"].backward()
        start = 0
        for mb in micro_batches:
            rows = slice(start, start + len(mb["mask"]))
            start = rows.stop
            t, v = self._encode(mb)
            torch.autograd.backward([t] + [getattr(v, n) for n in fields],
                                    [text.grad[rows]] + [getattr(video, n).grad[rows] for n in fields])
        return losses

    def _optimizer_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        self.model.train()
        for mb in micro_batches:
            if mb["failed"] and self.dist.world > 1:
                names = ", ".join(f["video_id"] for f in mb["failed"])
                raise EercfError(f"training videos stopped decoding mid-run ({names}); "
                                 "a multi-process step needs every process's batch whole")
        gate = gate_temperatures(self.model.temperatures, self.cfg["gate_temperature_start"],
                                 self.cfg["gate_anneal"], self.step, self.total_steps)
        losses = self._backward(micro_batches, gate)
        average_gradients(self.params)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg["clip_grad"] or math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # CLIP's cap on the temperature
            self.model.clip.logit_scale.clamp_(max=math.log(self.cfg["max_logit_scale"]))
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["grad_norm"] = float(grad_norm)
        out["frame_weak_temperature"] = gate.frame_weak
        return out

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        cfg = self.cfg
        val: dict[str, Any] | None = None
        pairs_seen = 0
        for epoch in range(self.epoch, cfg["epochs"]):
            self.epoch = epoch
            per_rank = self.micro_batch * cfg["grad_accum"]
            self.sampler.set_epoch(epoch, start=self.step_in_epoch * per_rank)
            bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, unit="step",
                       desc=f"epoch {epoch + 1}/{cfg['epochs']}", file=sys.stderr,
                       disable=not self.progress, dynamic_ncols=True)
            batches = iter(self.loader)
            tick = time.perf_counter()
            while self.step_in_epoch < self.steps_per_epoch:
                micro = [next(batches) for _ in range(cfg["grad_accum"])]
                record = self._optimizer_step(micro)
                self.step += 1
                self.step_in_epoch += 1
                now = time.perf_counter()
                seconds, tick = now - tick, now
                videos = cfg["batch_size"] if self.dist.world > 1 else sum(
                    len(mb["mask"]) for mb in micro)
                pairs = videos * self.views
                pairs_seen += pairs
                record = {"step": self.step, "epoch": epoch + self.step_in_epoch / self.steps_per_epoch,
                          **record, **self._learning_rates(),
                          "logit_scale": float(self.model.logit_scale.detach()),
                          "pairs_per_s": pairs / seconds, "videos_per_s": videos / seconds,
                          "step_seconds": seconds}
                self._log(record)
                bar.set_postfix(loss=f"{record['total']:.3f}", pairs_s=f"{record['pairs_per_s']:.1f}",
                                refresh=False)
                bar.update()
                every = cfg["checkpoint_every"]
                if every and self.step % every == 0 and self.step_in_epoch < self.steps_per_epoch:
                    self._save_checkpoint(f"step-{self.step}")
            bar.close()
            del batches
            self.step_in_epoch = 0
            self.epoch = epoch + 1
            if self.val_records:
                val = self._validate()
            self._save_checkpoint(f"epoch-{epoch + 1}", val)
        fitted = self._calibrate() if cfg["calibrate"] and self.val_records else None
        summary = self._summary(val, time.perf_counter() - started, pairs_seen)
        summary["fitted"] = fitted
        if self.dist.main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        barrier()
        return summary

    def _learning_rates(self) -> dict[str, float]:
        return {f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups}

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.main:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ validation
    def _validate(self) -> dict[str, Any] | None:
        """Retrieval metrics of the three modes on the validation split (process 0 scores;
        the others wait), logged; the best model is kept in ``best/``."""
        results = None
        if self.dist.main:
            results = self._score_validation()
            metric = self.cfg["best_metric"]
            value = best_metric_value(results, metric)
            better = self.best is None or is_better(metric, value, self.best["value"])
            self._log({"step": self.step, "epoch": self.epoch, "validation": results})
            if better:
                self.best = {"metric": metric, "value": value, "epoch": self.epoch,
                             "step": self.step}
                save_model(self.model, self.out / "best")
            if self.progress:
                line = "  ".join(f"{mode} R@1 {r['t2v']['R1']:.1f}" for mode, r in results.items())
                tqdm.write(f"epoch {self.epoch}: {line}", file=sys.stderr)
        self.best = broadcast_object(self.best)
        barrier()
        return results

    def _calibrate(self) -> dict[str, Any] | None:
        """Fit stage 2's fusion weights on the validation videos, into ``best/``."""
        fitted = None
        if self.dist.main:
            fitted = calibrate_best(self.out / "best", self.model, self._validation_set,
                                    self.dist.device, self.progress)
            self._log({"step": self.step, "epoch": self.epoch, "fitted": fitted})
        fitted = broadcast_object(fitted)
        barrier()
        return fitted

    def _validation_set(self, model):
        from ..evaluation import encode_records

        return encode_records(model, self.val_records, batch_size=max(1, self.micro_batch),
                              workers=self.cfg["workers"], cache_dir=str(self.cache_dir),
                              progress=self.progress)

    def _score_validation(self) -> dict[str, Any]:
        from ..evaluation import score_modes

        encoded = self._validation_set(self.model)
        return score_modes(self.model, encoded.text, encoded.caption_video, encoded.videos,
                           topk=self.cfg["eval_topk"])

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, name: str, val: dict | None = None) -> None:
        """``checkpoints/NAME/``: the model folder plus ``trainer.pt`` (see ``train.state``)."""
        if self.dist.main:
            state = {
                "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.state_dict(
                    self.step_in_epoch * self.micro_batch * self.cfg["grad_accum"]),
                "rng": rng_state(), "best": self.best, "world": self.dist.world,
                "config": self.cfg, "validation": val,
            }
            write_checkpoint(self.out / "checkpoints", name, self.model, state)
        barrier()

    def _load_trainer_state(self, folder: Path) -> None:
        state = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=False)
        if state["world"] != self.dist.world:
            raise EercfError(f"{folder}: saved by a {state['world']}-process run; resume it "
                             f"with {state['world']} processes (this run has {self.dist.world})")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.step_in_epoch, self.best = state["step_in_epoch"], state["best"]
        restore_rng(state["rng"])
        if self.dist.main:
            trim_log(self.out / "log.jsonl", self.step)
        barrier()

    def _summary(self, val: dict | None, seconds: float, pairs: int) -> dict[str, Any]:
        return {"out": str(self.out), "steps": self.step, "epochs": self.epoch,
                "train_pairs": sum(len(r.captions) for r in self.train_records),
                "train_videos": len(self.train_records),
                "seconds": seconds, "pairs_per_s": pairs / seconds if seconds else None,
                "best": self.best, "validation": val}


def train(cfg: dict[str, Any], out: str | Path, *, resume: bool = False,
          progress: bool = True, device: str | None = None) -> dict[str, Any]:
    """Run (or with ``resume`` continue) training with settings ``cfg`` into folder ``out``;
    under ``torchrun`` every process calls this. Returns the run summary."""
    dist = init_distributed(device)
    try:
        return Trainer(cfg, out, dist, resume=resume, progress=progress).run()
    finally:
        close_distributed()
