"""LightningModules: teacher fine-tuning (automatic optimization) and distillation (manual optimization)."""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from .data import model_inputs
from .layer_map import ParamPairs
from .losses import kd_loss, task_loss
from .metrics import build_metrics, predictions, selection_score
from .reptile import clip_grads_, fresh_adamw_step, interpolate_teacher_, set_teacher_pseudo_grads
from .tasks import Task

METHODS = ("reptile", "kd", "finetune")


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


class GlueModule(pl.LightningModule):
    """Dev evaluation shared by both modules: metrics per eval split, and a selection score."""

    def __init__(self, task: Task, eval_names: list[str]):
        super().__init__()
        self.task = task
        self.eval_names = eval_names
        self.val_metrics = nn.ModuleList([build_metrics(task) for _ in eval_names])
        self.last_eval: dict[str, float] = {}

    @property
    def eval_model(self) -> PreTrainedModel:
        raise NotImplementedError

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        logits = self.eval_model(**model_inputs(batch)).logits
        self.val_metrics[dataloader_idx].update(predictions(self.task, logits), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        results: dict[str, float] = {}
        for name, mc in zip(self.eval_names, self.val_metrics):
            results.update({f"{name}_{k}": float(v) for k, v in mc.compute().items()})
            mc.reset()
        results["selection"] = sum(selection_score(self.task, results, f"{n}_") for n in self.eval_names) / len(self.eval_names)
        self.last_eval = results
        # Metrics are already synced across processes by torchmetrics; these are plain floats.
        self.log_dict({f"val/{k}": v for k, v in results.items() if k != "selection"})
        self.log("val/selection", results["selection"], prog_bar=True)

    def check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(step, float(loss))


class FinetuneModule(GlueModule):
    """Fine-tunes one model on the task (the teacher): AdamW, linear warmup/decay, clipping by the Trainer."""

    def __init__(self, model: PreTrainedModel, task: Task, eval_names: list[str], optimizer: Callable, warmup_ratio: float):
        super().__init__(task, eval_names)
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


class DistilModule(GlueModule):
    """Distils `teacher` into `student` with method reptile (the paper), kd (frozen teacher) or finetune (no teacher).

    One training step of method=reptile (batch x, y):
      (a) g1 = grad_s L(s(x), t(x), y); clipped; s' = one fresh-AdamW step from s (closed form, no copy of the model)
      (b) teacher.grad = t[mapped] - s'; clipped; teacher AdamW + schedule step
      (c) g2 = grad_s L(s(x), t_new(x), y); clipped; student AdamW + schedule step
    """

    def __init__(self, teacher: PreTrainedModel | None, student: PreTrainedModel, task: Task, eval_names: list[str],
                 method: str, alpha: float, temperature: float, student_optimizer: Callable,
                 teacher_optimizer: Callable | None, warmup_ratio: float, max_grad_norm: float,
                 pairs: ParamPairs | None = None, update: str = "pseudo_grad", epsilon: float = 1.0,
                 share_forward: bool = False):
        super().__init__(task, eval_names)
        self.automatic_optimization = False
        self.teacher, self.student = teacher, student.train()
        self.method, self.alpha, self.temperature = method, alpha, temperature
        self.student_optimizer, self.teacher_optimizer = student_optimizer, teacher_optimizer
        self.warmup_ratio, self.max_grad_norm = warmup_ratio, max_grad_norm
        self.pairs, self.update, self.epsilon, self.share_forward = pairs, update, epsilon, share_forward
        self.outer_step = 0  # one per batch; Lightning's global_step counts every optimizer step
        if teacher is not None:
            # The teacher moves only through its optimizer (pseudo-gradients), never through backprop.
            teacher.requires_grad_(False)

    @property
    def eval_model(self) -> PreTrainedModel:
        return self.student

    def configure_optimizers(self):
        total = self.trainer.estimated_stepping_batches
        opt_s, sched_s = make_optimizer(self.student_optimizer, self.student, total, self.warmup_ratio)
        if self.method != "reptile" or self.update != "pseudo_grad":
            return [opt_s], [{"scheduler": sched_s, "interval": "step"}]
        # The teacher's params have requires_grad False; param_groups skips those, so build its groups explicitly.
        self.teacher.requires_grad_(True)
        opt_t, sched_t = make_optimizer(self.teacher_optimizer, self.teacher, total, self.warmup_ratio)
        self.teacher.requires_grad_(False)
        return [opt_s, opt_t], [{"scheduler": sched_s, "interval": "step"}, {"scheduler": sched_t, "interval": "step"}]

    def on_fit_start(self) -> None:
        # Per-parameter hyper-parameters of the fast step: the student's groups, at the initial learning rate.
        opts = self.optimizers()
        opt = opts[0] if isinstance(opts, list) else opts
        hp = {}
        for g in opt.optimizer.param_groups:
            for p in g["params"]:
                hp[p] = (g.get("initial_lr", g["lr"]), g["weight_decay"], g["betas"], g["eps"])
        self._student_params = [p for p in self.student.parameters() if p in hp]
        self._fast_hp = [hp[p] for p in self._student_params]

    def teacher_logits(self, inputs) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        self.teacher.eval()  # frozen for the KD loss: no dropout (Lightning puts the whole module in train mode)
        with torch.no_grad():
            return self.teacher(**inputs).logits

    def loss(self, s_logits, t_logits, labels) -> torch.Tensor:
        if t_logits is None:
            return task_loss(s_logits, labels, self.task.is_regression)
        return kd_loss(s_logits, t_logits, labels, self.alpha, self.temperature, self.task.is_regression)

    def fast_student(self, inputs, labels, s_logits: torch.Tensor) -> list[torch.Tensor]:
        """(a) The student's parameters after one step of a fresh AdamW on the KD loss against the current
        teacher (gradient clipped first). Closed form: no copy of the model, no optimizer built."""
        loss = self.loss(s_logits, self.teacher_logits(inputs), labels)
        params = self._student_params
        grads = list(torch.autograd.grad(loss, params, retain_graph=self.share_forward, allow_unused=True))
        present = [g for g in grads if g is not None]
        if self.trainer.world_size > 1:  # autograd.grad bypasses DDP: average over processes as DDP does
            mean_over_processes_(present)
        clip_grads_(present, self.max_grad_norm)
        lr, _, betas, eps = self._fast_hp[0]
        return fresh_adamw_step(params, grads, lr, [h[1] for h in self._fast_hp], betas, eps)

    def training_step(self, batch, batch_idx):
        inputs, labels = model_inputs(batch), batch["labels"]
        opts, scheds = self.optimizers(), self.lr_schedulers()
        if not isinstance(opts, list):
            opts, scheds = [opts], [scheds]
        opt_s, sched_s = opts[0], scheds[0]

        s_logits = self.student(**inputs).logits
        if self.method == "reptile":
            # (a) fast student, against the current teacher
            fast = self.fast_student(inputs, labels, s_logits)
            # (b) Reptile teacher update: pseudo-gradient theta_t - theta_fast on mapped parameters
            if self.update == "interpolate":
                interpolate_teacher_(self.pairs, fast, self.epsilon)
            else:
                opt_t, sched_t = opts[1], scheds[1]
                set_teacher_pseudo_grads(self.pairs, fast)
                self.clip_gradients(opt_t, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
                opt_t.step()
                sched_t.step()
                opt_t.zero_grad(set_to_none=True)  # free the pseudo-gradients until the next step
            del fast
            if not self.share_forward:  # a fresh forward (new dropout mask), as the reference code does
                s_logits = self.student(**inputs).logits
        # (c) the real student step, against the (updated) teacher
        loss = self.loss(s_logits, self.teacher_logits(inputs), labels)
        self.check_finite(loss, self.outer_step)
        opt_s.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.clip_gradients(opt_s, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
        opt_s.step()
        sched_s.step()
        self.outer_step += 1
        self.log("train/loss", loss, prog_bar=True)
        return loss
