"""task=custom: the user's own CSV / TSV / JSON-lines data, end to end (fine-tune -> distil -> predict) and every
bad input, refused with its fix before a model is loaded and before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification

from conftest import compose_cfg, patch_pipelines, quick
from reptiledistil.data.custom import sort_labels
from reptiledistil.data.glue import task_data
from reptiledistil.core.errors import ConfigError
from reptiledistil.pipelines.distil import distil
from reptiledistil.pipelines.teacher import finetune
from reptiledistil.pipelines.predict import predict

WORDS = "the a cat dog sat on mat runs quickly slowly big small red blue house tree".split()
CLASSES = ["pos", "neg", "mixed"]  # first-seen order; saved sorted: mixed, neg, pos


def sent(i: int, n: int = 5) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n))


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv_set(d: Path, n_train: int = 24, n_dev: int = 9, n_test: int = 7) -> dict[str, Path]:
    """Single-sentence classification with string labels; the test file has string ids (leading zeros kept)."""
    def rows(n):
        return ["sentence,label,note"] + [f'"{sent(i)}, {i}",{CLASSES[i % 3]},x' for i in range(n)]

    return {"train": write(d / "train.csv", rows(n_train)), "dev": write(d / "dev.csv", rows(n_dev)),
            "test": write(d / "test.csv", ["uid,sentence"] + [f"id-{i:03d},{sent(i + 1)}" for i in range(n_test)])}


def custom(files: dict[str, Path], *extra: str, text: str = "[sentence]") -> list[str]:
    return ["task=custom", f"data.train_file={files['train']}", f"data.validation_file={files['dev']}",
            f"data.text_columns={text}", *extra]


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_bert):
    """finetune_teacher.py -> train.py (reptile) -> predict.py on a CSV classification set."""
    tmp = tmp_path_factory.mktemp("custom_cls")
    files = write_csv_set(tmp / "data")
    teacher, run_dir = tmp / "teacher", tmp / "distil"
    ft = finetune(compose_cfg("finetune_teacher", quick(tmp, tmp) + custom(files) + [
        f"model.teacher_init={tiny_bert}", f"output_dir={teacher}"]))
    ds = distil(compose_cfg("train", quick(tmp, tmp) + custom(files) + [
        f"teacher_dir={teacher}", "model.student.start=pretrained", f"model.student.source={tiny_bert}", "model.student.num_layers=2",
        f"output_dir={run_dir}"]))
    return tmp, files, teacher, run_dir, ft, ds


def predict_cfg(model: Path, out: Path, *extra: str):
    return compose_cfg("predict", ["task=custom", f"model_dir={model}", f"output_dir={out}", *extra])


# --- end to end -----------------------------------------------------------------------------------------------


def test_finetune_and_distil_save_sorted_labels(pipeline):
    tmp, files, teacher, run_dir, ft, ds = pipeline
    for model_dir in (teacher, run_dir / "student", run_dir / "teacher"):
        config = AutoConfig.from_pretrained(model_dir)
        assert config.finetuning_task == "custom" and config.num_labels == 3
        assert config.id2label == {0: "mixed", 1: "neg", 2: "pos"}
        assert config.label2id == {"mixed": 0, "neg": 1, "pos": 2}
    dev = json.loads((teacher / "dev_metrics.json").read_text())
    assert dev["task"] == "custom" and dev["selection_metric"] == ["accuracy"]
    assert {"dev_accuracy", "dev_macro_f1"} <= set(dev["best"])
    assert dev["best"]["selection"] == dev["best"]["dev_accuracy"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "reptile" and {"dev_accuracy", "dev_macro_f1"} <= set(metrics["best"])
    assert listing(files["train"].parent) == ["dev.csv", "test.csv", "train.csv"], "no cache files beside the data"


def test_predict_writes_ids_and_label_names(pipeline):
    tmp, files, teacher, run_dir, *_ = pipeline
    out = tmp / "pred"
    # The labels come from the model's config: the training file is not read (here it does not even exist).
    res = predict(predict_cfg(run_dir / "student", out, f"data.test_file={files['test']}", "data.id_column=uid",
                              "data.train_file=/nonexistent/train.csv", "data.text_columns=[sentence]"))
    lines = (out / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "id\tprediction" and len(lines) == 8
    assert [l.split("\t")[0] for l in lines[1:]] == [f"id-{i:03d}" for i in range(7)]
    assert {l.split("\t")[1] for l in lines[1:]} <= set(CLASSES)
    assert res["predictions.tsv"] == str(out / "predictions.tsv")
    # the existing overwrite rule: refused without overwrite=true, replaced with it
    with pytest.raises(ConfigError, match="already exist.*overwrite=true"):
        predict(predict_cfg(run_dir / "student", out, f"data.test_file={files['test']}", "data.text_columns=[sentence]"))
    predict(predict_cfg(run_dir / "student", out, f"data.test_file={files['test']}", "data.text_columns=[sentence]",
                        "overwrite=true"))
    rows = (out / "predictions.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[0] for r in rows] == [str(i) for i in range(7)], "no id column: the row number"


def test_predict_dev_metrics(pipeline):
    tmp, files, teacher, *_ = pipeline
    out = tmp / "pred_dev"
    res = predict(predict_cfg(teacher, out, "split=dev", f"data.validation_file={files['dev']}",
                              "data.text_columns=[sentence]"))
    assert set(res["dev"]) == {"accuracy", "macro_f1"} and 0 <= res["dev"]["accuracy"] <= 1
    assert json.loads((out / "custom_dev_metrics.json").read_text())["dev"] == res["dev"]


def test_jsonl_regression(tmp_path, tiny_bert):
    d = tmp_path / "data"
    def rows(n):
        return [json.dumps({"q": sent(i), "score": round((i % 5) * 0.7, 2)}) for i in range(n)]

    files = {"train": write(d / "train.jsonl", rows(20)), "dev": write(d / "dev.json", rows(8)),
             "test": write(d / "test.jsonl", [json.dumps({"q": sent(i)}) for i in range(5)])}
    teacher = tmp_path / "teacher"
    summary = finetune(compose_cfg("finetune_teacher", quick(tmp_path, tmp_path) + custom(
        files, "data.label_column=score", "data.task_type=regression", text="[q]") + [
        f"model.teacher_init={tiny_bert}", f"output_dir={teacher}"]))
    assert summary["selection_metric"] == ["pearson", "spearman"]
    assert {"dev_pearson", "dev_spearman"} <= set(summary["best"])
    config = AutoConfig.from_pretrained(teacher)
    assert config.num_labels == 1 and config.problem_type == "regression" and config.finetuning_task == "custom"
    # predict.py takes the task type from the model: no data.task_type needed
    out = tmp_path / "pred"
    predict(predict_cfg(teacher, out, f"data.test_file={files['test']}", "data.text_columns=[q]"))
    lines = (out / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "id\tprediction" and [l.split("\t")[0] for l in lines[1:]] == ["0", "1", "2", "3", "4"]
    assert all(isinstance(float(l.split("\t")[1]), float) for l in lines[1:])
    res = predict(predict_cfg(teacher, out, "split=dev", f"data.validation_file={files['dev']}",
                              "data.text_columns=[q]", "data.label_column=score"))
    assert set(res["dev"]) == {"pearson", "spearman"}


def test_tsv_text_pairs(tmp_path, tiny_bert):
    d = tmp_path / "data"
    head = "question\tanswer\tlabel"
    files = {"train": write(d / "train.tsv", [head] + [f'"{sent(i)}\t{sent(i + 3)}\t{i % 2}' for i in range(16)]),
             "dev": write(d / "dev.tsv", [head] + [f"{sent(i)}\t{sent(i + 4)}\t{i % 2}" for i in range(6)])}
    cfg = compose_cfg("finetune_teacher", quick(tmp_path, tmp_path) + custom(files, text="[question,answer]") + [
        f"model.teacher_init={tiny_bert}", f"output_dir={tmp_path / 'teacher'}"])
    data = task_data(cfg)
    task, train = data.task, data.split("train")["train"]
    assert train.column_names == ["idx", "text_a", "text_b", "labels"]
    assert train[0]["text_a"] == f'"{sent(0)}' and train[0]["text_b"] == sent(3), "TSV: quotes are text"
    assert task.labels == ("0", "1") and train["labels"][:4] == [0, 1, 0, 1] and train["idx"][:3] == [0, 1, 2]
    summary = finetune(cfg)
    assert "dev_accuracy" in summary["best"]
    assert AutoConfig.from_pretrained(tmp_path / "teacher").id2label == {0: "0", 1: "1"}


def test_label_order_is_stable():
    assert sort_labels(["10", "2", "1", "2"]) == ("1", "2", "10")  # numbers: numerically
    assert sort_labels(["-1", "0.5", "0"]) == ("-1", "0", "0.5")
    assert sort_labels(["pos", "neg", "Mixed", "2"]) == ("2", "Mixed", "neg", "pos")  # else as strings
    assert sort_labels(["b", "a"]) == sort_labels(["a", "b"])


def test_numeric_labels_saved_in_numeric_order(tmp_path):
    d = tmp_path / "data"
    files = {"train": write(d / "train.csv", ["text,label"] + [f"{sent(i)},{[10, 2, 1][i % 3]}" for i in range(9)]),
             "dev": write(d / "dev.csv", ["text,label", f"{sent(0)},2"])}
    cfg = compose_cfg("finetune_teacher", custom(files, text="[text]") + ["log_dir=x"])
    data = task_data(cfg)
    assert data.task.labels == ("1", "2", "10")
    assert data.split("train")["train"]["labels"][:3] == [2, 1, 0]


# --- bad input: a ConfigError naming the problem and the fix, before any model, nothing written ---------------


@pytest.fixture
def no_models(monkeypatch):
    """Loading any model (or tokenizer) is a test failure: every check below must come first."""
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the data were checked")

    for name in ("load_for_finetuning", "load_finetuned", "load_tokenizer", "build_student"):
        patch_pipelines(monkeypatch, name, refuse)


def _bad_cases(d: Path) -> dict:
    files = write_csv_set(d)
    bad_dev = write(d / "bad_dev.csv", ["sentence,label", f"{sent(0)},pos", f'"two\nlines",neg', f"{sent(2)},happy"])
    latin1 = d / "latin1.csv"
    latin1.write_bytes(b"sentence,label\nfine,pos\ncaf\xe9,neg\n")
    return {
        "train_unset": (["task=custom", f"data.validation_file={files['dev']}", "data.text_columns=[sentence]"],
                        ["data.train_file is not set", "data.train_file=<"]),
        "validation_unset": (["task=custom", f"data.train_file={files['train']}", "data.text_columns=[sentence]"],
                             ["data.validation_file is not set", "data.validation_file=<"]),
        "not_found": (custom({**files, "dev": d / "nope.csv"}), ["nope.csv", "does not exist", "Check the path"]),
        "extension": (custom({**files, "train": write(d / "train.txt", ["sentence,label"])}),
                      ["unsupported file type '.txt'", ".csv", ".tsv", ".jsonl"]),
        "text_column": (custom(files, text="[review]"),
                        ["no column 'review'", "sentence, label, note", "data.text_columns"]),
        "label_column": (custom(files, "data.label_column=target"),
                         ["no column 'target'", "sentence, label, note", "data.label_column"]),
        "three_text_columns": (custom(files, text="[a,b,c]"), ["3 columns", "one or two"]),
        "unseen_dev_label": (custom({**files, "dev": bad_dev}),
                             [f"{bad_dev}:5", "'happy'", "training data", "['mixed', 'neg', 'pos']",
                              "add training examples"]),
        "empty": (custom({**files, "train": write(d / "empty.csv", [""])}), ["empty.csv is empty"]),
        "header_only": (custom({**files, "dev": write(d / "header.csv", ["sentence,label"])}),
                        ["header.csv has a header line but no data rows", "Add one example"]),
        "not_utf8": (custom({**files, "train": latin1}), [f"{latin1}:3", "not UTF-8", "0xe9", "Save the file as UTF-8"]),
        "task_type": (custom(files, "data.task_type=multilabel"),
                      ["data.task_type='multilabel'", "data.task_type=classification", "data.task_type=regression"]),
        "one_class": (custom({**files, "train": write(d / "one.csv", ["sentence,label", "a b,pos", "c d,pos"])}),
                      ["every example has the label 'pos'", "at least two classes"]),
        "not_a_number": (custom(files, "data.task_type=regression"),
                         [f"{files['train']}:2", "'pos'", "not a number", "data.task_type=classification"]),
    }


BAD = ["train_unset", "validation_unset", "not_found", "extension", "text_column", "label_column",
       "three_text_columns", "unseen_dev_label", "empty", "header_only", "not_utf8", "task_type", "one_class",
       "not_a_number"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_finetune(tmp_path, no_models, case):
    d = tmp_path / "data"
    overrides, expected = _bad_cases(d)[case]
    before = listing(d)
    out = tmp_path / "out"
    cfg = compose_cfg("finetune_teacher", quick(tmp_path, tmp_path) + overrides + [f"output_dir={out}"])
    with pytest.raises(ConfigError) as e:
        finetune(cfg)
    for part in expected:
        assert part in str(e.value), (part, str(e.value))
    assert not out.exists() and not (tmp_path / ".out.partial").exists(), "nothing written"
    assert listing(d) == before, "nothing written beside the data"


def test_bad_input_distil(tmp_path, no_models):
    d = tmp_path / "data"
    overrides, expected = _bad_cases(d)["unseen_dev_label"]
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        distil(compose_cfg("train", quick(tmp_path, tmp_path) + overrides + [f"output_dir={out}",
                                                                              f"teacher_dir={tmp_path / 'none'}"]))
    assert all(part in str(e.value) for part in expected), str(e.value)
    assert not out.exists()


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory):
    """A tiny random classifier saved as if fine-tuned with task=custom (labels mixed, neg, pos)."""
    from conftest import tiny_bert_config

    path = tmp_path_factory.mktemp("custom_model")
    config = tiny_bert_config(2, num_labels=3, finetuning_task="custom", id2label={0: "mixed", 1: "neg", 2: "pos"},
                              label2id={"mixed": 0, "neg": 1, "pos": 2})
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    return path


def test_bad_input_predict(tmp_path, no_models, custom_model):
    d = tmp_path / "data"
    files = write_csv_set(d)
    bad_dev = write(d / "bad_dev.csv", ["sentence,label", f"{sent(0)},pos", f"{sent(2)},happy"])
    out = tmp_path / "pred"
    cases = [
        ([], ["data.test_file is not set", "data.test_file=<"]),
        ([f"data.test_file={files['test']}", "data.id_column=row_id", "data.text_columns=[sentence]"],
         ["no column 'row_id'", "uid, sentence", "data.id_column"]),
        ([f"data.test_file={files['test']}", "data.text_columns=[text]"], ["no column 'text'", "data.text_columns"]),
        (["split=dev", f"data.validation_file={bad_dev}", "data.text_columns=[sentence]"],
         [f"{bad_dev}:3", "'happy'", "labels of the model", "['mixed', 'neg', 'pos']"]),
    ]
    for overrides, expected in cases:
        with pytest.raises(ConfigError) as e:
            predict(predict_cfg(custom_model, out, *overrides))
        assert all(part in str(e.value) for part in expected), (expected, str(e.value))
    assert not out.exists()


def test_predict_refuses_a_glue_model(tmp_path, no_models):
    from conftest import tiny_bert_config

    rte = tmp_path / "rte"
    AutoModelForSequenceClassification.from_config(tiny_bert_config(2, num_labels=2, finetuning_task="rte")
                                                   ).save_pretrained(rte)
    files = write_csv_set(tmp_path / "data")
    with pytest.raises(ConfigError, match="fine-tuned on task 'rte', not on custom data.*model_dir="):
        predict(predict_cfg(rte, tmp_path / "pred", f"data.test_file={files['test']}", "data.text_columns=[sentence]"))
