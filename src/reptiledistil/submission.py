"""Batch inference and prediction files: GLUE submissions (`index<TAB>prediction`, one row per test example, in
order) and task=custom's predictions.tsv (`id<TAB>prediction`)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from .data import length_order, model_inputs, tokenize
from .outputs import saving, write_text_atomic
from .tasks import Task


def token_batches(tokenizer, ds: datasets.Dataset, max_seq_length: int, batch_size: int):
    """The model inputs of `ds` (columns text_a, text_b) in order, tokenized and padded batch by batch."""
    return _batches(_encode(tokenizer, ds, max_seq_length), tokenizer, batch_size)


def _encode(tokenizer, ds: datasets.Dataset, max_seq_length: int) -> datasets.Dataset:
    return tokenize(ds, tokenizer, max_seq_length).remove_columns([c for c in ("labels", "idx") if c in ds.column_names])


def _batches(enc: datasets.Dataset, tokenizer, batch_size: int):
    loader = DataLoader(enc.with_format("python"), batch_size=batch_size, shuffle=False,
                        collate_fn=DataCollatorWithPadding(tokenizer, return_tensors="pt"))
    return (model_inputs(b) for b in loader)


def sample_batch(tokenizer, ds: datasets.Dataset, max_seq_length: int, n: int = 8) -> dict[str, torch.Tensor]:
    """The first `n` examples of `ds` as one padded batch (traces an ONNX graph and checks its logits)."""
    return next(token_batches(tokenizer, ds.select(range(min(n, len(ds)))), max_seq_length, n))


def predict_logits(runner, tokenizer, ds: datasets.Dataset, max_seq_length: int, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits for every example of `ds` (columns text_a, text_b), in order.

    The examples run longest first (batches of similar lengths pad little) and their logits are put back in the
    order of `ds`. `runner` maps a batch of token tensors to logits (engines.TorchRunner, engines.OnnxRunner); a
    plain PyTorch model is run in fp32 on `device`.
    """
    from .engines import EngineChoice, TorchRunner

    if isinstance(runner, torch.nn.Module):
        runner = TorchRunner(runner, EngineChoice("torch", "fp32", str(device), ""))
    enc = _encode(tokenizer, ds, max_seq_length)
    order = length_order(enc)
    out = [runner(b) for b in _batches(enc.select(order), tokenizer, batch_size)]
    if not out:
        return torch.empty(0, runner.num_labels)
    sorted_logits = torch.cat(out)
    logits = torch.empty_like(sorted_logits)
    logits[torch.tensor(order)] = sorted_logits
    return logits


def format_predictions(task: Task, logits: torch.Tensor) -> list[str]:
    """Label names for classification (0/1 for binary tasks, names for NLI); STS-B scores clipped to [0, 5].

    task=custom: the label names saved with the model; regression scores unclipped (6 significant digits).
    """
    if task.is_regression:
        if task.is_custom:
            return [f"{x + 0.0:.6g}" for x in logits.squeeze(-1).tolist()]
        # + 0.0 turns -0.0 (which clamp keeps) into 0.0, so no "-0.000" reaches the server.
        return [f"{x + 0.0:.3f}" for x in logits.squeeze(-1).clamp(0.0, 5.0).tolist()]
    return [task.labels[i] for i in logits.argmax(-1).tolist()]


def write_submission(path: Path, indices: list, preds: list[str], id_header: str = "index") -> None:
    """`<id_header>\tprediction`, then one row per example (GLUE: index; task=custom: id)."""
    assert len(indices) == len(preds), (len(indices), len(preds))
    lines = [f"{id_header}\tprediction"] + [f"{i}\t{p}" for i, p in zip(indices, preds)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def zip_submissions(out_dir: Path, name: str = "glue_submission.zip") -> Path:
    """Every submission .tsv in out_dir, in one zip for the GLUE server (written beside, then renamed)."""
    target = out_dir / name
    tmp = out_dir / f".{name}.tmp"
    try:
        with saving(target), zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out_dir.glob("*.tsv")):
                z.write(f, f.name)
        tmp.replace(target)
    except BaseException:  # a full disk: no half-written zip left behind
        tmp.unlink(missing_ok=True)
        raise
    return target
