"""predict.py: dev metrics (split=dev) or GLUE submission files (split=test) from a model or an ONNX export."""

from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..config.schema import CheckedConfig, checked
from ..core.errors import ConfigError
from ..core.faults import write_fault
from ..core.files import write_json_atomic
from ..core.lock import owned
from ..core.outputs import check_output_dir, check_output_target, check_writable
from ..data.glue import TaskData, task_data
from ..data.datamodule import check_max_seq_length
from ..data.metrics import format_metrics
from ..data.tasks import CUSTOM, Task
from ..inference.engines import EngineChoice
from ..training.run_dir import DATA_KEYS, protected_inputs
from ..models.loading import check_finetuned_config, is_export_dir, is_onnx_dir, load_finetuned, load_tokenizer, model_labels


@dataclass(frozen=True)
class PredictPlan:
    """What predict.py will do, every input checked: no model or tokenizer is loaded, nothing is written yet. The
    plan owns output_dir (a lock inside it: runs may share the folder, one at a time) and export_dir until run(plan)
    ends."""

    cfg: DictConfig
    data: TaskData
    splits: dict  # {name: Dataset} of the split asked for, read and checked
    choice: EngineChoice  # the engine and precision that run the model
    export: bool  # export=onnx: the model is written to export_dir first, and that export runs
    out: Path
    held: ExitStack  # the locks on output_dir (and export_dir)


def plan(cfg: DictConfig | CheckedConfig) -> PredictPlan:
    """Every check, in the order a user fixes them: the config, the data's task (task=custom: labels from the
    model's config), the export and engine against the model folder and this machine, the output files, the data,
    then the model's config against the task and max_seq_length."""
    from ..inference.engines import resolve_engine

    cfg = checked(cfg).cfg
    data = task_data(cfg, model_labels(cfg.model_dir) if str(cfg.task.name).lower() == CUSTOM else None)
    export = _export_request(cfg)
    choice = resolve_engine("onnx" if export else cfg.engine, cfg.precision, cfg.quantize, cfg.model_dir)
    out, held = _owned_outputs(cfg, data.task, export)
    try:
        splits = data.split(cfg.split)  # bad data: refused before the model
        config = check_finetuned_config(cfg.model_dir, data.task, "Model", _model_hint(data.task))  # no weights read
        check_max_seq_length(cfg.max_seq_length, config.max_position_embeddings)
    except BaseException:
        held.close()
        raise
    return PredictPlan(cfg=cfg, data=data, splits=splits, choice=choice, export=export, out=out, held=held)


def predict(cfg: DictConfig | CheckedConfig) -> dict:
    """Dev metrics (split=dev) or GLUE submission files (split=test) from a fine-tuned model or an export.

    With export=onnx the model is first written for serving to export_dir, and that export then runs; the onnx
    engine on a PyTorch model directory (engine=onnx or quantize=int8 without export) exports to a temporary one.
    """
    return run(plan(cfg))


def run(plan: PredictPlan) -> dict:
    """Load, predict (exporting first where the plan says so), publish the metrics file or the submission."""
    import tempfile

    cfg, data, choice, export, splits, out = plan.cfg, plan.data, plan.choice, plan.export, plan.splits, plan.out
    with _working(plan):
        tokenizer = load_tokenizer(cfg.model_dir)
        print(f"engine: {choice.note}")
        result: dict = {"task": data.task.name, "model_dir": str(cfg.model_dir), "split": cfg.split,
                        "engine": choice.engine, "precision": choice.precision}
        with tempfile.TemporaryDirectory(prefix="reptiledistil-onnx-") as tmp:
            if choice.engine == "onnx" and not is_onnx_dir(cfg.model_dir):  # export first: export_dir, or a temp dir
                target = Path(cfg.export_dir) if export else Path(tmp) / "model"
                runner, check = _export_runner(cfg, data, choice, tokenizer=tokenizer, splits=splits, target=target,
                                               export=export, result=result)
            else:
                runner, check = _model_runner(cfg, data.task, choice), None
            _run_predictions(cfg, data.task, runner, tokenizer, splits=splits, check=check, out=out, result=result)
        _publish_predictions(cfg, data.task, out, result)
    return result


def _model_hint(task: Task) -> str:
    return ("AX is predicted with an MNLI model: pass model_dir=<an MNLI model directory>." if task.name == "ax"
            else f"Pass model_dir=<a model fine-tuned or distilled on {task.name}>.")


def _owned_outputs(cfg: DictConfig, task: Task, export: bool) -> tuple[Path, ExitStack]:
    """predict.py owns its output folder (a lock inside it: runs may share the folder, one at a time) and its
    export_dir from here until it ends; the files it writes must not exist (unless overwrite=true), checked under
    the lock. (output_dir, the held locks)."""
    if not str(cfg.output_dir).strip():
        raise ConfigError("output_dir is empty. Pass output_dir=<dir> (output_dir=. for the working directory).")
    out = Path(cfg.output_dir)
    check_writable(out, "output_dir")
    held = ExitStack()
    try:
        held.enter_context(owned(out, lock=out / ".predict.lock"))
        if export:
            held.enter_context(owned(cfg.export_dir, fix="choose another export_dir=<dir>"))
            check_output_dir(cfg.export_dir, cfg.overwrite, "export_dir")
        clash = [f for f in _prediction_files(cfg, task, out) if f.exists()]
        if clash and not cfg.overwrite:
            raise ConfigError(f"{', '.join(map(str, clash))} already exist(s). Pass overwrite=true to replace, "
                              "or choose another output_dir=<dir>.")
    except BaseException:
        held.close()
        raise
    return out, held


@contextmanager
def _working(plan: PredictPlan):
    """While predict.py works: its folders stay owned, and a failed write is answered."""
    with plan.held:
        try:
            yield
        except Exception as e:
            fault = write_fault(e)
            if fault is None:
                raise
            raise ConfigError(f"{fault} Nothing half-written is left, and what {plan.out} held before is as it was: "
                              f"{fault.fix}, then run the command again.") from None


def _prediction_files(cfg: DictConfig, task: Task, out: Path) -> list[Path]:
    return ([out / s.submission for s in task.test_splits] if cfg.split == "test"
            else [out / f"{task.name}_dev_metrics.json"])


def _unless_appeared(path: Path, overwrite: bool) -> Path:
    """A file checked absent before the model loaded is not replaced if it appeared since (unless overwrite=true)."""
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} appeared while this run was working, and was left as it is. Move it away and run "
                          "again, or pass overwrite=true to replace it.")
    return path


def _model_runner(cfg: DictConfig, task: Task, choice):
    """An ONNX export directory as it is, or the PyTorch model with the chosen engine."""
    from ..inference.engines import OnnxRunner, TorchRunner

    if choice.engine == "onnx":
        return OnnxRunner(cfg.model_dir)
    return TorchRunner(load_finetuned(cfg.model_dir, task, "Model", _model_hint(task)), choice)


def _export_runner(cfg: DictConfig, data: TaskData, choice, *, tokenizer, splits: dict, target: Path, export: bool,
                   result: dict):
    """Export the PyTorch model to ONNX at `target` (export_dir, or a temporary folder) and run that; with
    export=onnx and export_check, its dev metric is checked against the source model's. (runner, check or None)."""
    from ..inference.engines import EngineChoice, OnnxRunner, TorchRunner, export_onnx, record_dev_check
    from ..inference.submission import sample_batch

    model = load_finetuned(cfg.model_dir, data.task, "Model", _model_hint(data.task))
    sample = sample_batch(tokenizer, next(iter(splits.values())), cfg.max_seq_length)
    export_onnx(model, tokenizer, target, quantize="int8" if choice.precision == "int8" else "none",
                task=data.task.name, sample=sample, overwrite=cfg.overwrite, source=str(cfg.model_dir))
    runner = OnnxRunner(target)
    check = None
    if export:
        result["export_dir"] = str(target)
        print(f"wrote the ONNX {choice.precision} model to {target}")
    if export and cfg.export_check:
        reference = TorchRunner(model, EngineChoice("torch", "fp32", "cpu", ""))
        check = _dev_check(cfg, data, tokenizer, reference=reference, exported=runner, splits=splits)
        if check is not None:
            result["export_check"] = check
            record_dev_check(target, check)
    return runner, check


def _run_predictions(cfg: DictConfig, task: Task, runner, tokenizer, *, splits: dict, check: dict | None, out: Path,
                     result: dict) -> None:
    """split=dev: metrics per split into `result`; split=test: one submission file per split."""
    from ..data.metrics import compute_metrics, predictions
    from ..inference.submission import format_predictions, predict_logits, write_submission

    for name, ds in splits.items():
        if cfg.split == "dev":
            if check is not None:  # the export check has just scored the export on this split
                m = check["splits"][name]["export"]
            else:
                logits = predict_logits(runner, tokenizer, ds, cfg.max_seq_length, cfg.eval_batch_size)
                m = compute_metrics(task, predictions(task, logits), torch.tensor(ds["labels"]))
            result[name] = m
            print(f"{task.name} {name} ({len(ds)} examples): {format_metrics(m)}")
        else:
            logits = predict_logits(runner, tokenizer, ds, cfg.max_seq_length, cfg.eval_batch_size)
            write_submission(_unless_appeared(out / name, cfg.overwrite), ds["idx"], format_predictions(task, logits),
                             task.id_header)
            result[name] = str(out / name)
            print(f"wrote {out / name} ({len(ds)} rows)")


def _publish_predictions(cfg: DictConfig, task: Task, out: Path, result: dict) -> None:
    """split=dev: the metrics file; split=test with zip=true: the submission zip."""
    from ..inference.submission import zip_submissions

    if cfg.split == "dev":
        write_json_atomic(_unless_appeared(out / f"{task.name}_dev_metrics.json", cfg.overwrite), result)
    elif cfg.zip:
        result["zip"] = str(zip_submissions(out))
        print(f"wrote {result['zip']}")


def _export_request(cfg: DictConfig) -> bool:
    """export=onnx / export_dir= checked before anything is loaded: True when the model is to be exported."""
    export, export_dir = cfg.get("export"), cfg.get("export_dir")
    if export is None and export_dir is None:
        return False
    if export_dir is None:
        raise ConfigError("export=onnx writes a model directory: pass export_dir=<dir> too.")
    if str(cfg.engine).lower() not in ("auto", "onnx"):
        raise ConfigError(f"engine={cfg.engine} and export=onnx disagree: the export is what runs. Drop engine=.")
    if is_export_dir(cfg.model_dir):
        raise ConfigError(f"{cfg.model_dir} is already an export; export from the fp32 model directory it came from.")
    check_output_target(export_dir, "export_dir", protected_inputs(cfg, "model_dir", *DATA_KEYS))
    check_writable(export_dir, "export_dir", beside=True)
    return True  # what export_dir holds is checked once predict owns it (_owned_outputs)


def _dev_check(cfg: DictConfig, data: TaskData, tokenizer, *, reference, exported, splits: dict) -> dict | None:
    """The export's dev metric against its source model's; warns loudly past max_metric_drop points."""
    from ..data.metrics import compute_metrics, predictions, selection_score
    from ..inference.submission import predict_logits

    try:
        dev = splits if cfg.split == "dev" else data.split("dev")
    except ConfigError as e:
        print(f"export check skipped (no labelled dev data: {e})")
        return None
    task = data.task
    check: dict = {"max_metric_drop": float(cfg.max_metric_drop), "splits": {}}
    for name, ds in dev.items():
        labels = torch.tensor(ds["labels"])
        m = {k: compute_metrics(task, predictions(task, predict_logits(r, tokenizer, ds, cfg.max_seq_length,
                                                                       cfg.eval_batch_size)), labels)
             for k, r in (("source", reference), ("export", exported))}
        sel = {k: selection_score(task, v) for k, v in m.items()}
        drop = 100 * (sel["source"] - sel["export"])
        check["splits"][name] = {**m, "selection": sel, "drop_points": drop}
        print(f"export check, {task.name} {name}: source {100 * sel['source']:.2f}, export "
              f"{100 * sel['export']:.2f} ({-drop:+.2f} points)")
        if drop > cfg.max_metric_drop:
            print(f"\n{'!' * 78}\nWARNING: the export loses {drop:.2f} points of dev metric on {task.name} {name} "
                  f"(more than max_metric_drop={cfg.max_metric_drop:g}).\nServe the fp32 model or export=onnx without "
                  f"quantize=int8, or accept the loss knowingly.\n{'!' * 78}\n", file=sys.stderr)
    return check
