"""LightningModules: teacher fine-tuning (automatic optimization) and distillation (manual optimization)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from ..data.datamodule import model_inputs
from ..models.layer_map import ParamPairs
from ..methods.losses import clip_grads_, kd_loss_terms, task_loss
from ..methods.base import Method
from ..data.metrics import build_metrics, predictions, selection_score
from ..data.tasks import Task


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, value: float):
        super().__init__(f"The training loss became {value} at step {step}.")
        self.step = step


def mean_over_processes_(tensors: list[torch.Tensor]) -> None:
    """All-reduce (mean) a list of tensors in one flat buffer, so every process takes the same fast step."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, f in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        t.copy_(f)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (BERT's recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(optimizer: Callable, model: nn.Module, total_steps: int, warmup_ratio: float):
    """`optimizer` is a partial (Hydra `_partial_: true`) taking params; its weight_decay applies to the decay group."""
    wd = getattr(optimizer, "keywords", {}).get("weight_decay", 0.0)
    opt = optimizer(param_groups(model, wd))
    sched = get_linear_schedule_with_warmup(opt, int(warmup_ratio * total_steps), total_steps)
    return opt, sched


def layer_group(name: str) -> str:
    """`bert.encoder.layer.3.attention...` -> `layer_3`; embeddings, pooler and the task head by name."""
    m = re.search(r"\.layer\.(\d+)\.", name)
    if m:
        return f"layer_{m.group(1)}"
    return next((g for g in ("embeddings", "pooler") if g in name), "head")


@torch.no_grad()
def relative_drift(start: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer group, ||theta - theta_start|| / ||theta_start|| over the group's parameters (L2)."""
    diff: dict[str, float] = {}
    base: dict[str, float] = {}
    for name, t0 in start.items():
        g = layer_group(name)
        diff[g] = diff.get(g, 0.0) + float((current[name].float() - t0.float()).pow(2).sum())
        base[g] = base.get(g, 0.0) + float(t0.float().pow(2).sum())
    return {g: (diff[g] / base[g]) ** 0.5 if base[g] else 0.0 for g in diff}


def _require_fp32(**nets) -> None:
    for name, net in nets.items():
        if net is not None and any(p.dtype != torch.float32 for p in net.parameters()):
            raise TypeError(f"The {name}'s weights must be fp32 (mixed precision keeps fp32 master weights); "
                            "load it with dtype=torch.float32.")


class TeacherDrift:
    """How far a learning teacher has moved from its fine-tuned weights, per layer group (the paper's idea, made
    visible). The start is copied when built, before a resume restores the updated weights; on the CPU: no GPU
    memory."""

    def __init__(self, watched: list[tuple[str, nn.Parameter]]):
        self.watched = watched
        self.start = {n: p.detach().cpu().clone() for n, p in watched}

    def __call__(self) -> dict[str, float]:
        return relative_drift(self.start, {n: p.detach().cpu() for n, p in self.watched})


class GlueModule(pl.LightningModule):
    """Dev evaluation and gradient clipping shared by both modules."""

    def __init__(self, task: Task, eval_names: list[str], max_grad_norm: float):
        super().__init__()
        self.task = task
        self.eval_names = eval_names
        self.max_grad_norm = max_grad_norm
        self.val_metrics = nn.ModuleList([build_metrics(task) for _ in eval_names])
        self.last_eval: dict[str, float] = {}
        self.last_grad_norm: torch.Tensor | None = None

    @property
    def eval_model(self) -> PreTrainedModel:
        raise NotImplementedError

    @property
    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """The fp16 loss scaler (trainer.precision=16-mixed), else None."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Clip every optimizer step here, on unscaled gradients, whatever the precision.

        Lightning's own clipping refuses fused optimizers under mixed precision (they unscale inside
        step()), so it is not used: for those we unscale first (GradScaler.step then knows); Lightning has
        already unscaled the others by the time this hook runs. Under bf16 and fp32 there is no scaler.
        """
        scaler = self.grad_scaler
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.last_grad_norm = clip_grads_(grads, self.max_grad_norm)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        logits = self.eval_model(**model_inputs(batch)).logits
        self.val_metrics[dataloader_idx].update(predictions(self.task, logits), batch["labels"])

    def compute_eval(self, metric_sets: nn.ModuleList) -> dict[str, float]:
        """{<split>_<metric>: value, selection: mean of the task's selection metrics}; resets the metrics."""
        results: dict[str, float] = {}
        for name, mc in zip(self.eval_names, metric_sets):
            results.update({f"{name}_{k}": float(v) for k, v in mc.compute().items()})
            mc.reset()
        results["selection"] = sum(selection_score(self.task, results, f"{n}_") for n in self.eval_names) / len(self.eval_names)
        return results

    def on_validation_epoch_end(self) -> None:
        results = self.last_eval = self.compute_eval(self.val_metrics)
        # Metrics are already synced across processes by torchmetrics; these are plain floats.
        self.log_dict({f"val/{k}": v for k, v in results.items() if k != "selection"})
        self.log("val/selection", results["selection"], prog_bar=True)
        self.log("epoch", float(self.current_epoch + 1))  # 1-based, as in metrics.json

    def check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(step, float(loss))


class TeacherModule(GlueModule):
    """Fine-tunes one model on the task (the teacher): AdamW, linear warmup/decay, clipping."""

    def __init__(self, model: PreTrainedModel, task: Task, eval_names: list[str], optimizer: Callable,
                 warmup_ratio: float, max_grad_norm: float):
        super().__init__(task, eval_names, max_grad_norm)
        self.model = model.train()  # from_pretrained returns eval mode: dropout would stay off
        self.optimizer_factory, self.warmup_ratio = optimizer, warmup_ratio

    @property
    def eval_model(self) -> PreTrainedModel:
        return self.model

    def training_step(self, batch, batch_idx):
        loss = task_loss(self.model(**model_inputs(batch)).logits, batch["labels"], self.task.is_regression)
        self.check_finite(loss, self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt, sched = make_optimizer(self.optimizer_factory, self.model, self.trainer.estimated_stepping_batches, self.warmup_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@dataclass(frozen=True)
class DistilSettings:
    """The distillation loop's settings (their defaults live in conf/train.yaml) and the method it runs."""

    method: Method  # built from conf/method/<name>.yaml; hardware choices made (Method.for_hardware)
    alpha: float  # weight of the KD term
    temperature: float
    warmup_ratio: float
    max_grad_norm: float


class DistilModule(GlueModule):
    """Distils `teacher` into `student` with the method in `settings` (methods/: finetune, kd, reptile, metadistil).

    One training step: (a, b) the method's teacher step (methods/<name>.py; the teacher moves or not, and may
    need the batch skipped), then (c) the student's step on the KD loss against the (updated) teacher.
    Mixed precision: the forwards run under autocast, weights and the teacher's update stay fp32. Under fp16
    (16-mixed) a batch whose student gradient is not finite is skipped for both networks (the teacher's step is
    undone) and the loss scale backs off.
    """

    def __init__(self, teacher: PreTrainedModel | None, student: PreTrainedModel, task: Task, eval_names: list[str],
                 settings: DistilSettings, student_optimizer: Callable, teacher_optimizer: Callable | None = None,
                 pairs: ParamPairs | None = None, quiz_batch: Callable[[int, int], dict] | None = None):
        super().__init__(task, eval_names, settings.max_grad_norm)
        self.automatic_optimization = False
        self.teacher, self.student = teacher, student.train()
        self.settings = s = settings
        self.method, self.alpha, self.temperature, self.warmup_ratio = s.method, s.alpha, s.temperature, s.warmup_ratio
        self.regression = task.is_regression
        self.student_optimizer, self.teacher_optimizer = student_optimizer, teacher_optimizer
        self.pairs = pairs
        self.quiz_batch = quiz_batch  # (step, rank) -> a held-out batch, for a method with a quiz set
        self.outer_step = 0  # batches trained on; Lightning's global_step counts the student's optimizer steps
        self.skipped_steps = 0  # fp16 only: batches skipped because a gradient overflowed
        self.teacher_record: dict = {}  # what the method's last teacher step logged
        # A teacher that learns is measured every epoch: its own dev score and its drift (TeacherDrift).
        learns = self.method.teacher_learns
        self.teacher_metrics = nn.ModuleList([build_metrics(task) for _ in eval_names]) if learns else None
        self.teacher_drift = TeacherDrift(self.method.watched(teacher, pairs))
        if teacher is not None:
            # The teacher moves only through the method's step, never through the student's backward.
            teacher.requires_grad_(False)

    @property
    def eval_model(self) -> PreTrainedModel:
        return self.student

    def configure_optimizers(self):
        total = self.trainer.estimated_stepping_batches
        opt_s, sched_s = make_optimizer(self.student_optimizer, self.student, total, self.warmup_ratio)
        if not self.method.teacher_optimized:
            return [opt_s], [{"scheduler": sched_s, "interval": "step"}]
        # The teacher's params have requires_grad False; param_groups skips those, so build its groups explicitly.
        self.teacher.requires_grad_(True)
        opt_t, sched_t = make_optimizer(self.teacher_optimizer, self.teacher, total, self.warmup_ratio)
        self.teacher.requires_grad_(False)
        return [opt_s, opt_t], [{"scheduler": sched_s, "interval": "step"}, {"scheduler": sched_t, "interval": "step"}]

    def on_fit_start(self) -> None:
        _require_fp32(student=self.student, teacher=self.teacher)

    # -- what a method's teacher step may use (methods.base.Loop) ------------------------------------------------
    def student_param_groups(self) -> list[dict]:
        opts = self.optimizers()
        return (opts[0] if isinstance(opts, list) else opts).optimizer.param_groups

    def held_out_batch(self) -> dict[str, torch.Tensor]:  # by (step, process): a resumed run draws the same
        return {k: v.to(self.device) for k, v in self.quiz_batch(self.outer_step, self.global_rank).items()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["distil_counters"] = {"outer_step": self.outer_step, "skipped_steps": self.skipped_steps}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.outer_step = checkpoint["distil_counters"]["outer_step"]
        self.skipped_steps = checkpoint["distil_counters"]["skipped_steps"]

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        super().validation_step(batch, batch_idx, dataloader_idx)
        if self.teacher_metrics is not None:
            logits = self.teacher(**model_inputs(batch)).logits
            self.teacher_metrics[dataloader_idx].update(predictions(self.task, logits), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.teacher_metrics is None:
            return
        teacher = {f"teacher_{k}": v for k, v in self.compute_eval(self.teacher_metrics).items()}
        drift = {f"teacher_drift_{g}": v for g, v in self.teacher_drift().items()}
        self.last_eval.update({**teacher, **drift})
        self.log_dict({f"teacher_val/{k[8:]}": v for k, v in teacher.items()})
        self.log_dict({f"teacher_drift/{k[14:]}": v for k, v in drift.items()})

    def teacher_logits(self, inputs) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        self.teacher.eval()  # frozen for the KD loss: no dropout (Lightning puts the whole module in train mode)
        with torch.no_grad():
            return self.teacher(**inputs).logits

    def loss_terms(self, s_logits, t_logits, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(loss, task term, KD term); no KD term without a teacher."""
        if t_logits is None:
            loss = task_loss(s_logits, labels, self.task.is_regression)
            return loss, loss, None
        return kd_loss_terms(s_logits, t_logits, labels, alpha=self.alpha, temperature=self.temperature,
                             regression=self.task.is_regression)

    def loss(self, s_logits, t_logits, labels) -> torch.Tensor:
        return self.loss_terms(s_logits, t_logits, labels)[0]

    def average_over_processes_(self, tensors: list[torch.Tensor]) -> None:
        """Under DDP, the mean over processes in place (as DDP does for the student's backward): for gradients
        a method takes with autograd.grad, which bypasses DDP, so every process takes the same step."""
        if self.trainer.world_size > 1:
            mean_over_processes_(tensors)

    def training_step(self, batch, batch_idx):
        inputs, labels = model_inputs(batch), batch["labels"]
        opts, scheds = self.optimizers(), self.lr_schedulers()
        if not isinstance(opts, list):
            opts, scheds = [opts], [scheds]
        opt_s = opts[0]
        scaler = self.grad_scaler
        # (a, b) the method's teacher step; it may reuse the student's forward or leave (c) a fresh one
        step = self.method.teacher_step(self, inputs=inputs, labels=labels,
                                        optimizer=opts[1].optimizer if len(opts) > 1 else None)
        if step.skipped:  # fp16 overflow: neither network moves; smaller loss scale next time
            return self._skip_batch(scaler)
        s_logits = step.student_logits if step.student_logits is not None else self.student(**inputs).logits
        # (c) the real student step, against the (updated) teacher
        loss, task_term, kd_term = self.loss_terms(s_logits, self.teacher_logits(inputs), labels)
        self.check_finite(loss, self.outer_step)
        opt_s.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_s.step()  # on_before_optimizer_step unscales (fp16) and clips; the scaler skips it on overflow
        if scaler is not None and not torch.isfinite(self.last_grad_norm):
            if step.undo is not None:
                step.undo()
            return self._skip_batch(None)  # the scaler has already backed off
        lrs = [sched.get_last_lr()[0] for sched in scheds]  # the learning rates this step used
        for sched in scheds:
            sched.step()
        self.outer_step += 1
        self.teacher_record = step.record
        self.log("train/loss", loss, prog_bar=True)
        # what a dashboard needs per step: both loss terms, both learning rates, the gradient norms
        record = {"train/task_loss": task_term, "lr/student": lrs[0], "grad_norm/student": self.last_grad_norm,
                  "epoch": float(self.current_epoch + 1),  # 1-based, as in metrics.json
                  "train/kd_term": kd_term, "lr/teacher": lrs[1] if len(lrs) > 1 else None, **step.record}
        self.log_dict({k: v for k, v in record.items() if v is not None})
        return loss

    def _skip_batch(self, scaler: torch.amp.GradScaler | None) -> None:
        if scaler is not None:
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
        self.skipped_steps += 1
        self.outer_step += 1
        self.log("train/skipped_steps", float(self.skipped_steps))
