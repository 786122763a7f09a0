"""Shared fixtures: tiny random BERTs with the real uncased vocab, synthetic GLUE-layout TSVs, Hydra compose."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from hydra import compose, initialize_config_dir  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertModel  # noqa: E402

from reptiledistil.models.loading import minilm_dir  # noqa: E402

from reptiledistil.config.cli import register_resolvers  # noqa: E402

register_resolvers()  # what the entry scripts do before Hydra composes the configs

CONF = Path(__file__).resolve().parents[1] / "conf"
SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "glue_data"


def tiny_bert_config(layers: int = 4, hidden: int = 32, **kw) -> BertConfig:
    return BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=2 * hidden, max_position_embeddings=128, **kw)


def save_tiny_bert(path: Path, layers: int = 4, hidden: int = 32, seed: int = 0, **kw) -> Path:
    """A random pretrained-style BERT (no task head) plus the real MiniLM uncased tokenizer."""
    torch.manual_seed(seed)
    BertModel(tiny_bert_config(layers, hidden, **kw)).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_dir())


# --- synthetic GLUE files in the classic layout, quirks included -------------------------------------------

WORDS = "the a cat dog sat on mat runs quickly slowly big small red blue house tree".split()


def _sent(i: int, n: int = 6) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n))


def write_glue(root: Path, n_train: int = 24, n_dev: int = 12, n_test: int = 10) -> Path:
    """RTE, CoLA (headerless train/dev), MRPC (BOM), STS-B, MNLI (matched/mismatched) and AX."""
    def w(path: Path, lines: list[str], bom: bool = False):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")

    nli2 = ["entailment", "not_entailment"]
    for split, n in (("train", n_train), ("dev", n_dev)):
        w(root / "RTE" / f"{split}.tsv", ["index\tsentence1\tsentence2\tlabel"] +
          [f"{i}\t{_sent(i)}\t{_sent(i + 1, 4)}\t{nli2[i % 2]}" for i in range(n)])
        w(root / "CoLA" / f"{split}.tsv", [f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\t{_sent(i)}" for i in range(n)])
        w(root / "MRPC" / f"{split}.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"] +
          [f"{i % 2}\t{100 + i}\t{200 + i}\t{_sent(i)}\t{_sent(i + 2)}" for i in range(n)], bom=True)
        w(root / "STS-B" / f"{split}.tsv",
          ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"] +
          [f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{_sent(i)}\t{_sent(i + 3)}\t{(i % 6) * 0.8:.3f}" for i in range(n)])
    mnli_head = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                 "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")
    mnli3 = ["entailment", "neutral", "contradiction"]
    w(root / "MNLI" / "train.tsv", [mnli_head + "\tlabel1\tgold_label"] +
      [f"{i}\t1\t1e\tfiction\t()\t()\t()\t()\t{_sent(i)}\t{_sent(i + 1)}\t{mnli3[i % 3]}\t{mnli3[i % 3]}" for i in range(n_train)])
    for sfx in ("matched", "mismatched"):
        w(root / "MNLI" / f"dev_{sfx}.tsv", [mnli_head + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"] +
          [f"{i}\t1\t1e\tfiction\t()\t()\t()\t()\t{_sent(i)}\t{_sent(i + 2)}" + f"\t{mnli3[i % 3]}" * 6 for i in range(n_dev)])
        w(root / "MNLI" / f"test_{sfx}.tsv", [mnli_head] +
          [f"{i}\t1\t1e\tfiction\t()\t()\t()\t()\t{_sent(i)}\t{_sent(i + 4)}" for i in range(n_test)])
    w(root / "RTE" / "test.tsv", ["index\tsentence1\tsentence2"] + [f"{i}\t{_sent(i)}\t{_sent(i + 5)}" for i in range(n_test)])
    w(root / "CoLA" / "test.tsv", ["index\tsentence"] + [f"{i}\t{_sent(i)}" for i in range(n_test)])
    w(root / "MRPC" / "test.tsv", ["index\t#1 ID\t#2 ID\t#1 String\t#2 String"] +
      [f"{i}\t{i}\t{i}\t{_sent(i)}\t{_sent(i + 1)}" for i in range(n_test)])
    w(root / "STS-B" / "test.tsv", ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"] +
      [f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{_sent(i)}\t{_sent(i + 3)}" for i in range(n_test)])
    w(root / "diagnostic" / "diagnostic.tsv", ["index\tsentence1\tsentence2"] +
      [f"{i}\t{_sent(i)}\t{_sent(i + 6)}" for i in range(n_test)])
    return root


@pytest.fixture
def glue_dir(tmp_path) -> Path:
    return write_glue(tmp_path / "glue_data")


PIPELINES = ("teacher", "distil", "predict")


def patch_pipelines(monkeypatch, name: str, value) -> None:
    """Replace `name` in every pipeline module that calls it (each imports what it calls by name)."""
    import importlib

    modules = [importlib.import_module(f"reptiledistil.pipelines.{p}") for p in PIPELINES]
    assert any(hasattr(m, name) for m in modules), f"no pipeline uses {name}"
    for m in modules:
        if hasattr(m, name):
            monkeypatch.setattr(m, name, value)


def compose_cfg(name: str, overrides: list[str]):
    """Compose conf/<name>.yaml as the scripts would (no Hydra run directory: log_dir must be overridden)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def quick(tmp: Path, glue: Path) -> list[str]:
    """Overrides that shrink a run to seconds on CPU."""
    return [f"data.glue_dir={glue}", f"log_dir={tmp / 'logs'}", "epochs=1", "batch_size=8", "eval_batch_size=8",
            "max_seq_length=32", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "~logger"]


@pytest.fixture(scope="session")
def rte_teacher(tmp_path_factory, tiny_bert):
    """(folder, glue_dir): a tiny teacher fine-tuned on synthetic RTE at <folder>/teacher, shared by test modules."""
    from reptiledistil.pipelines.teacher import finetune

    tmp = tmp_path_factory.mktemp("rte_teacher")
    glue = write_glue(tmp / "glue_data")
    finetune(compose_cfg("finetune_teacher", quick(tmp, glue) + [
        "task=rte", f"model.teacher_init={tiny_bert}", f"output_dir={tmp / 'teacher'}"]))
    return tmp, glue
