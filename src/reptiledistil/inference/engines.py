"""Inference engines: how predict.py and bench/speedup.py run a fine-tuned model, and the ONNX export.

    engine  precision  what runs                                                       where
    torch   fp32       the Hugging Face model as trained                                CPU, GPU
    torch   bf16       the same under bf16 autocast                                      GPU with bf16; CPU with AVX512-BF16/AMX
    onnx    fp32       ONNX Runtime on the exported graph, with ORT's BERT fusions      CPU
    onnx    int8       the same graph, dynamically quantized by ORT (int8 weights)      CPU

int8 is ONNX Runtime's: it was faster than PyTorch's dynamic int8 (torch.ao, deprecated in torch 2.13) in every
case measured (both presets, batch 1 and 32; docs/performance.md), at the same accuracy, so that path is gone.

`resolve_engine` checks a choice against the model directory and the machine before anything is loaded; a
runner (`TorchRunner`, `OnnxRunner`) maps a batch of token tensors to fp32 logits on the CPU.

ONNX export directory (written by `export_onnx`, read by `OnnxRunner` / `predict.py model_dir=<dir>`)::

    model.onnx          the graph: inputs input_ids, attention_mask[, token_type_ids] (int64, dynamic batch and
                        sequence axes), output logits (fp32); ORT's transformer fusions applied, int8 if quantized
    onnx_export.json    the marker: {"format": "reptiledistil-onnx", "version": 1, "quantize": "none"|"int8",
                        "task": ..., "inputs": [...], "opset": ..., "fused_operators": {...},
                        "parity": {...}, "dev_check": {...}, versions}
    config.json         the source model's Hugging Face config (labels, task): predict.py checks the task with it
    tokenizer files
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.hardware import cpu_supports_bf16
from ..core.files import atomic_dir, write_json_atomic
from ..core.outputs import check_output_dir
from ..models.loading import MARKER, OLD_INT8_MARKER, is_onnx_dir

MODEL_FILE = "model.onnx"
FORMAT = "reptiledistil-onnx"
VERSION = 1
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
INSTALL_HINT = "pip install '.[onnx]' (onnx, onnxruntime and onnxscript)"


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # torch | onnx
    precision: str  # fp32 | bf16 | int8
    device: str  # cpu | cuda
    note: str  # why, printed once

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision} ({self.device})"


def read_marker(path: str | Path) -> dict:
    path = Path(path)
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path / MARKER} is unreadable ({e}); export the model again.") from None
    if marker.get("format") != FORMAT or marker.get("version") != VERSION:
        raise ConfigError(f"{path / MARKER} describes format {marker.get('format')!r} version {marker.get('version')!r}; "
                          f"this code reads {FORMAT!r} version {VERSION}. Export the model again.")
    if not (path / marker.get("model", MODEL_FILE)).is_file():
        raise ConfigError(f"{path / MODEL_FILE} is missing: the ONNX export {path.resolve()} is incomplete; export again.")
    return marker


def require_onnxruntime():
    """onnxruntime, or a ConfigError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"The ONNX engine needs onnxruntime, which is not installed: {INSTALL_HINT}.") from None
    return onnxruntime


def _bf16_available(device: str) -> tuple[bool, str]:
    if device == "cuda":
        return torch.cuda.is_bf16_supported(), "this GPU has no bf16 support"
    return cpu_supports_bf16(), ("this CPU has no bf16 units (AVX512-BF16 or AMX), where bf16 runs slower than fp32")


def resolve_engine(engine: str, precision: str, quantize: str, model_dir: str | Path,
                   cuda: bool | None = None) -> EngineChoice:
    """Check engine= / precision= / quantize= against the model directory and this machine; resolve `auto`.

    The words are the schema's (config/schema.py PredictConfig: engine, precision, quantize). `auto` engine: ONNX
    Runtime for an ONNX export directory or when int8 is asked for, PyTorch otherwise. `auto` precision: bf16 where
    the device has bf16 units (GPU, or CPU with AVX512-BF16/AMX), else fp32. int8 is never chosen for you: it changes
    predictions, so it is asked for (quantize=int8) and checked.
    """
    quantize = quantize or "none"
    if precision == "bf16" and quantize == "int8":
        raise ConfigError("precision=bf16 and quantize=int8 exclude each other: int8 runs its own kernels. Pass one.")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if (Path(model_dir) / OLD_INT8_MARKER).is_file():
        raise ConfigError(f"{model_dir} is a PyTorch int8 model from an earlier version, which this version no longer "
                          "runs (ONNX Runtime's int8 is faster). Export the fp32 model again: export=onnx quantize=int8 "
                          "export_dir=<dir>.")
    if is_onnx_dir(model_dir):
        marker = read_marker(model_dir)
        if engine == "torch":
            raise ConfigError(f"{model_dir} is an ONNX export: PyTorch cannot run it. Pass engine=onnx (or auto), or "
                              "model_dir=<the PyTorch model it was exported from>.")
        if precision == "bf16":
            raise ConfigError("precision=bf16 is for the torch engine; an ONNX export runs in the precision it was "
                              f"exported with ({marker.get('quantize')}).")
        if quantize == "int8" and marker.get("quantize") != "int8":
            raise ConfigError(f"{model_dir} is an fp32 ONNX export; quantize=int8 needs an int8 one: export again with "
                              "export=onnx quantize=int8 export_dir=<dir>.")
        require_onnxruntime()
        prec = "int8" if marker.get("quantize") == "int8" else "fp32"
        return EngineChoice("onnx", prec, "cpu", f"ONNX Runtime {prec} (an ONNX export, CPU)")
    if quantize == "int8":
        if engine == "torch":
            raise ConfigError("int8 runs on ONNX Runtime (faster than PyTorch's dynamic int8 in every case measured, "
                              "docs/performance.md): drop engine=torch, or drop quantize=int8.")
        engine = "onnx"
    if engine == "auto":
        engine = "torch"
    if engine == "onnx":
        if precision == "bf16":
            raise ConfigError("precision=bf16 is for the torch engine; the onnx engine runs fp32 or int8 (quantize=int8).")
        require_onnxruntime()
        prec = "int8" if quantize == "int8" else "fp32"
        return EngineChoice("onnx", prec, "cpu", f"ONNX Runtime {prec} (CPU{'; the GPU is not used' if cuda else ''})")
    device = "cuda" if cuda else "cpu"
    ok, why_not = _bf16_available(device)
    if precision == "bf16" and not ok:
        raise ConfigError(f"precision=bf16: {why_not}. Pass precision=fp32, or precision=auto to let the machine choose.")
    if precision == "auto":
        precision = "bf16" if ok else "fp32"
        why = "bf16 units found" if ok else why_not.split(",")[0]
        return EngineChoice("torch", precision, device, f"PyTorch {precision} on {device} (auto: {why})")
    return EngineChoice("torch", precision, device, f"PyTorch {precision} on {device}")


class TorchRunner:
    """fp32 logits on the CPU for a batch, from a PyTorch model (fp32, or bf16 autocast)."""

    def __init__(self, model: nn.Module, choice: EngineChoice):
        self.model = model.eval().to(choice.device)
        self.device, self.bf16 = choice.device, choice.precision == "bf16"
        self.input_names = _accepted_inputs(model)
        self.num_labels = model.config.num_labels

    @torch.inference_mode()
    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = {k: v.to(self.device) for k, v in batch.items() if k in self.input_names}
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(**x).logits.float().cpu()


class OnnxRunner:
    """fp32 logits on the CPU for a batch, from an ONNX export run by ONNX Runtime."""

    def __init__(self, model_dir: str | Path, threads: int | None = None):
        ort = require_onnxruntime()
        self.marker = read_marker(model_dir)
        opts = ort.SessionOptions()
        # As many threads as torch uses, so that engines compare fairly and share the machine alike.
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are not the user's
        # ORT's idle threads spin by default, taking the cores from whatever runs next (the tokenizer, torch, the
        # next batch's collation); measured: it slowed the model timed after it by up to 2x on 2 cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = Path(model_dir) / self.marker.get("model", MODEL_FILE)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT's own types (InvalidProtobuf, Fail) are not OSError/RuntimeError subclasses
            raise ConfigError(f"{path} cannot be loaded by ONNX Runtime ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}): it is truncated or "
                              "damaged, e.g. a half-finished copy. Copy the export folder again, or export the model "
                              "again (predict.py export=onnx export_dir=<dir>).") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.num_labels = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("num_labels", 2)

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]
        feed = {n: (batch[n] if n in batch else torch.zeros_like(ids)).cpu().to(torch.int64).numpy()
                for n in self.input_names}
        return torch.from_numpy(self.session.run(["logits"], feed)[0]).float()


def _accepted_inputs(model: nn.Module) -> list[str]:
    import inspect

    params = inspect.signature(model.forward).parameters
    return [n for n in INPUT_NAMES if n in params]


class _LogitsOnly(nn.Module):
    """Positional token tensors in, logits out: the signature the ONNX graph gets."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors):
        return self.model(**dict(zip(self.names, tensors))).logits


def _export_graph(model: nn.Module, sample: dict[str, torch.Tensor], path: Path) -> list[str]:
    """torch -> ONNX with dynamic batch and sequence axes; returns the input names."""
    names = [n for n in _accepted_inputs(model) if n in sample]
    model = copy.deepcopy(model).float().eval().cpu()
    # The eager attention exports as plain MatMul/Softmax, the pattern ORT's BERT optimizer fuses into one
    # Attention op; the SDPA path exports in a form it does not recognise.
    model.config._attn_implementation = "eager"
    for m in model.modules():
        if hasattr(m, "config"):
            m.config._attn_implementation = "eager"
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    args = tuple(sample[n].cpu() for n in names)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter (dynamo=False) is deprecated but gives the graph ORT's fusions expect; its
        # deprecation and tracer warnings say nothing the user can act on.
        warnings.simplefilter("ignore")
        torch.onnx.export(_LogitsOnly(model, names), args, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return names


def _optimize_graph(src: Path, dst: Path, config) -> dict:
    """ORT's transformer fusions (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm); returns what was fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        opt = optimize_model(str(src), model_type="bert", num_heads=config.num_attention_heads,
                             hidden_size=config.hidden_size, opt_level=0)
        opt.save_model_to_file(str(dst))
        return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


def _quantize_graph(src: Path, dst: Path) -> None:
    """ORT dynamic quantization: int8 weights (one scale per output channel), activations quantized per batch.

    The fused ops (Attention and friends, com.microsoft domain) defeat ONNX shape inference, so the tensor type
    ORT cannot infer is given: fp32.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})


@contextmanager
def _quiet_root_logger():
    """ORT's optimizer and quantizer log through the root logger (fusion counts, advice to pre-process for static
    quantization): nothing the user acts on. Errors still pass."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def export_onnx(model: nn.Module, tokenizer, out_dir: str | Path, *, quantize: str, task: str,
                sample: dict[str, torch.Tensor], overwrite: bool = False, source: str = "") -> Path:
    """Write `model` as an ONNX export directory (module docstring): graph, fusions, int8 if asked, parity check.

    `sample` is a batch of real, padded examples: it traces the graph, and the export's logits on it are compared
    with PyTorch's (recorded in the marker as `parity`). Written through a staging directory.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx imports it)
    except ImportError:
        raise ConfigError(f"export=onnx needs the onnx packages, which are not installed: {INSTALL_HINT}.") from None
    ort = require_onnxruntime()
    out = check_output_dir(out_dir, overwrite)
    with atomic_dir(out, overwrite) as tmp:  # published: never over a folder that appeared meanwhile
        raw, fused = tmp / "model.raw.onnx", tmp / ("model.fused.onnx" if quantize == "int8" else MODEL_FILE)
        names = _export_graph(model, sample, raw)
        fusions = _optimize_graph(raw, fused, model.config)
        if quantize == "int8":
            _quantize_graph(fused, tmp / MODEL_FILE)
            fused.unlink()
        raw.unlink()
        model.config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        marker = {"format": FORMAT, "version": VERSION, "model": MODEL_FILE, "quantize": quantize, "task": task,
                  "inputs": names, "opset": OPSET, "fused_operators": fusions, "source": source,
                  "torch_version": torch.__version__, "onnxruntime_version": ort.__version__}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        ref = TorchRunner(model, EngineChoice("torch", "fp32", "cpu", ""))(sample)
        got = OnnxRunner(tmp)(sample)
        marker["parity"] = {"examples": int(ref.shape[0]), "max_abs_logit_diff": float((ref - got).abs().max()),
                            "max_abs_logit": float(ref.abs().max())}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return out


def record_dev_check(export_dir: str | Path, check: dict) -> None:
    """Add the dev-metric comparison (source model vs export) to a finished export's marker."""
    path = Path(export_dir) / MARKER
    marker = json.loads(path.read_text(encoding="utf-8"))
    marker["dev_check"] = check
    write_json_atomic(path, marker)
