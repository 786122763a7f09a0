"""models.py: refusing wrong model directories early, and building a student from teacher layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

from conftest import tiny_bert_config
from reptiledistil.core.errors import ConfigError
from reptiledistil.models.loading import (build_student, check_model_source, label_kwargs, load_finetuned, load_for_finetuning,
                                  load_tokenizer, task_config)
from reptiledistil.data.tasks import get_task


def save_classifier(path: Path, tokenizer, num_labels: int, finetuning_task: str | None = None,
                    id2label: dict | None = None, layers: int = 2) -> Path:
    """A tiny random sequence classifier saved like a fine-tuned model."""
    torch.manual_seed(0)
    kw = {"num_labels": num_labels}
    if id2label is not None:
        kw.update(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    cfg = tiny_bert_config(layers, finetuning_task=finetuning_task, **kw)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --- model sources ------------------------------------------------------------------------------------------


def test_missing_local_path_names_it(tmp_path):
    missing = tmp_path / "models" / "teacher"
    with pytest.raises(ConfigError, match=rf"Teacher {missing} does not exist\. Fine-tune one first"):
        load_finetuned(str(missing), get_task("rte"), "Teacher", "Fine-tune one first.")


@pytest.mark.parametrize("name", ["./no_such_model", "~/no/such/model/dir", "a/b/c"])
def test_paths_that_cannot_be_hub_ids_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        check_model_source(name, "Model")


def test_hub_like_name_passes_through():
    assert check_model_source("bert-base-uncased", "Model") == "bert-base-uncased"
    assert check_model_source("huawei-noah/TinyBERT_General_4L_312D", "Model") == "huawei-noah/TinyBERT_General_4L_312D"


def test_unreachable_hub_id_is_a_config_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"Could not load model 'no-such-org-xyz/no-such-model-xyz'.*"
                                          r"Check the path or your network"):
        load_finetuned("no-such-org-xyz/no-such-model-xyz", get_task("rte"))


def test_dir_without_config(tmp_path):
    d = tmp_path / "empty_model"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match=rf"Model {d} exists but holds no model \(no config\.json\)\. Pass model_dir"):
        load_finetuned(str(d), get_task("rte"), "Model", "Pass model_dir=<dir>.")
    with pytest.raises(ConfigError, match=r"no config\.json"):
        load_for_finetuning(str(d), get_task("rte"))


def test_load_tokenizer(tiny_bert, tokenizer):
    tok = load_tokenizer(str(tiny_bert))
    assert tok("a cat")["input_ids"] == tokenizer("a cat")["input_ids"]


# --- heads --------------------------------------------------------------------------------------------------


def test_model_finetuned_on_another_task(tmp_path, tokenizer):
    d = save_classifier(tmp_path / "rte_model", tokenizer, 2, "rte")
    with pytest.raises(ConfigError, match=r"was fine-tuned on task 'rte', not 'mrpc'\. Pass model_dir=<an mrpc model>"):
        load_finetuned(str(d), get_task("mrpc"), "Model", "Pass model_dir=<an mrpc model>.")
    assert load_finetuned(str(d), get_task("RTE")).config.finetuning_task == "rte"


def test_hf_style_task_names_accepted(tmp_path, tokenizer):
    d = save_classifier(tmp_path / "sst", tokenizer, 2, "SST-2")
    assert load_finetuned(str(d), get_task("sst2")).num_labels == 2


def test_ax_accepts_an_mnli_model_only(tmp_path, tokenizer):
    mnli = {0: "entailment", 1: "neutral", 2: "contradiction"}
    d = save_classifier(tmp_path / "mnli", tokenizer, 3, "mnli", mnli)
    assert load_finetuned(str(d), get_task("ax")).config.num_labels == 3
    qnli = save_classifier(tmp_path / "qnli", tokenizer, 2, "qnli")
    with pytest.raises(ConfigError, match="fine-tuned on task 'qnli', not 'ax'"):
        load_finetuned(str(qnli), get_task("ax"))


def test_regression_task_with_classification_head(tmp_path, tokenizer):
    d = save_classifier(tmp_path / "two", tokenizer, 2)  # no finetuning_task: only the head size can tell
    with pytest.raises(ConfigError, match=r"has a 2-way classification head, but task stsb needs a regression task "
                                          r"\(1 output\)\. Fine-tune on stsb"):
        load_finetuned(str(d), get_task("stsb"), "Model", "Fine-tune on stsb.")


def test_label_count_mismatch(tmp_path, tokenizer):
    d = save_classifier(tmp_path / "two", tokenizer, 2)
    with pytest.raises(ConfigError, match="2-way classification head, but task mnli needs 3 labels"):
        load_finetuned(str(d), get_task("mnli"))


def test_permuted_label_names_refused(tmp_path, tokenizer):
    # e.g. roberta-large-mnli: contradiction, neutral, entailment. Using our ids would mislabel everything.
    d = save_classifier(tmp_path / "perm", tokenizer, 3, None, {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"})
    with pytest.raises(ConfigError, match=r"orders its labels \['contradiction', 'neutral', 'entailment'\], but task "
                                          r"mnli uses \['entailment', 'neutral', 'contradiction'\]"):
        load_finetuned(str(d), get_task("mnli"))
    same = save_classifier(tmp_path / "same", tokenizer, 3, None, {0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"})
    assert load_finetuned(str(same), get_task("mnli")).num_labels == 3
    generic = save_classifier(tmp_path / "generic", tokenizer, 3)  # LABEL_0.. says nothing about the order
    assert load_finetuned(str(generic), get_task("mnli")).num_labels == 3


def test_label_kwargs():
    kw = label_kwargs(get_task("mnli"))
    assert kw["num_labels"] == 3 and kw["finetuning_task"] == "mnli"
    assert kw["id2label"] == {0: "entailment", 1: "neutral", 2: "contradiction"}
    assert kw["label2id"]["contradiction"] == 2 and kw["problem_type"] == "single_label_classification"
    reg = label_kwargs(get_task("stsb"))
    assert reg == {"num_labels": 1, "finetuning_task": "stsb", "problem_type": "regression"}


def test_load_for_finetuning_sets_head(tiny_bert):
    m = load_for_finetuning(str(tiny_bert), get_task("stsb"))
    assert m.config.num_labels == 1 and m.config.problem_type == "regression" and m.config.finetuning_task == "stsb"
    assert m.classifier.out_features == 1
    src = BertModel.from_pretrained(tiny_bert)
    assert torch.equal(m.bert.encoder.layer[2].output.dense.weight, src.encoder.layer[2].output.dense.weight)


def test_finetuned_model_round_trip(tmp_path, tiny_bert):
    m = load_for_finetuning(str(tiny_bert), get_task("rte"))
    m.save_pretrained(tmp_path / "rte")
    saved = json.loads((tmp_path / "rte" / "config.json").read_text())
    assert saved["finetuning_task"] == "rte" and saved["id2label"] == {"0": "entailment", "1": "not_entailment"}
    back = load_finetuned(str(tmp_path / "rte"), get_task("rte"))
    assert torch.equal(back.classifier.weight, m.classifier.weight)
    with pytest.raises(ConfigError, match="not 'qnli'"):
        load_finetuned(str(tmp_path / "rte"), get_task("qnli"))


def test_task_config_overrides(tiny_bert):
    cfg = task_config(str(tiny_bert), get_task("cola"), num_hidden_layers=2)
    assert isinstance(cfg, BertConfig) and cfg.num_hidden_layers == 2 and cfg.num_labels == 2
    assert cfg.finetuning_task == "cola" and cfg.hidden_size == 32


# --- students -----------------------------------------------------------------------------------------------


def test_build_student_teacher_layers_skip(tiny_bert):
    student = build_student("teacher_layers", str(tiny_bert), get_task("rte"), num_layers=2, strategy="skip")
    src = BertModel.from_pretrained(tiny_bert)
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    assert student.config.finetuning_task == "rte" and student.config.num_labels == 2
    for s_i, t_i in ((0, 1), (1, 3)):  # skip on 4 -> 2: layers 1 and 3
        s_state = student.bert.encoder.layer[s_i].state_dict()
        t_state = src.encoder.layer[t_i].state_dict()
        assert s_state.keys() == t_state.keys()
        for k in t_state:
            assert torch.equal(s_state[k], t_state[k]), (s_i, k)
    # ... and not the layer the `first` strategy would pick
    assert not torch.equal(student.bert.encoder.layer[0].attention.self.query.weight,
                           src.encoder.layer[0].attention.self.query.weight)
    for k, v in src.embeddings.state_dict().items():
        assert torch.equal(student.bert.embeddings.state_dict()[k], v), k
    for k, v in src.pooler.state_dict().items():
        assert torch.equal(student.bert.pooler.state_dict()[k], v), k


@pytest.mark.parametrize("strategy, picked", [("first", [0, 1]), ("last", [2, 3]), ("both", [1, 3])])
def test_build_student_other_strategies(tiny_bert, strategy, picked):
    student = build_student("teacher_layers", str(tiny_bert), get_task("rte"), num_layers=2, strategy=strategy)
    src = BertModel.from_pretrained(tiny_bert)
    for s_i, t_i in enumerate(picked):
        assert torch.equal(student.bert.encoder.layer[s_i].intermediate.dense.weight,
                           src.encoder.layer[t_i].intermediate.dense.weight), (strategy, s_i)


def test_build_student_default_depth_and_pretrained(tiny_bert):
    full = build_student("teacher_layers", str(tiny_bert), get_task("mnli"))
    assert full.config.num_hidden_layers == 4 and full.config.num_labels == 3
    pre = build_student("pretrained", str(tiny_bert), get_task("stsb"))
    assert pre.config.num_hidden_layers == 4 and pre.config.num_labels == 1


def test_a_student_init_other_than_the_schemas_words_is_refused_before_building():
    from conftest import compose_cfg
    from reptiledistil.config.schema import check_config

    with pytest.raises(ConfigError, match=r"model\.student\.init=random is not one of pretrained, teacher_layers"):
        check_config(compose_cfg("train", ["model.student.start=pretrained", "model.student.init=random"]))


def test_build_student_deeper_than_source(tiny_bert):
    with pytest.raises(ConfigError, match="more layers"):
        build_student("teacher_layers", str(tiny_bert), get_task("rte"), num_layers=6)


def test_build_student_missing_source(tmp_path):
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'nope'} does not exist"):
        build_student("teacher_layers", str(tmp_path / "nope"), get_task("rte"), num_layers=2)
