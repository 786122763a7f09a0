"""The GLUE task table (tasks.py) and reading / tokenising the classic TSV layout (data.py), on synthetic files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg
from reptiledistil.config.schema import check_config
from reptiledistil.data.datamodule import DataSettings, GlueDataModule, check_max_seq_length, model_inputs, subsample, tokenize
from reptiledistil.data.glue import DEFAULT_GLUE_DIRS, load_split, read_tsv, resolve_glue_dir
from reptiledistil.core.errors import ConfigError
from reptiledistil.data.tasks import TASKS, get_task

GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]


# --- task table ---------------------------------------------------------------------------------------------


def test_all_glue_tasks_and_ax_present():
    assert set(TASKS) == set(GLUE_TASKS) | {"ax"}
    for name, task in TASKS.items():
        assert task.name == name


@pytest.mark.parametrize("given, expected", [("RTE", "rte"), ("sts-b", "stsb"), ("STS-B", "stsb"), ("SST-2", "sst2"),
                                             ("MNLI", "mnli"), ("AX", "ax"), ("cola", "cola")])
def test_get_task_normalises_names(given, expected):
    assert get_task(given).name == expected


def test_unknown_task_lists_valid_names_and_the_fix():
    with pytest.raises(ConfigError, match=r"Unknown task 'squad'") as e:
        get_task("squad")
    msg = str(e.value)
    for name in GLUE_TASKS + ["ax"]:
        assert name in msg
    assert "task=<name>" in msg


def test_regression_flag_and_num_labels():
    stsb = get_task("stsb")
    assert stsb.is_regression and stsb.num_labels == 1 and stsb.labels == ()
    for name in ("cola", "sst2", "mrpc", "qqp", "qnli", "rte", "wnli"):
        assert not get_task(name).is_regression and get_task(name).num_labels == 2
    assert get_task("mnli").num_labels == 3 and get_task("ax").num_labels == 3
    assert get_task("mnli").labels == ("entailment", "neutral", "contradiction")
    assert get_task("ax").labels == get_task("mnli").labels  # AX is predicted with an MNLI model


def test_mnli_has_matched_and_mismatched_splits():
    mnli = get_task("mnli")
    assert [(s.name, s.file) for s in mnli.eval_splits] == [("dev", "dev_matched.tsv"), ("dev_mm", "dev_mismatched.tsv")]
    assert [(s.file, s.submission) for s in mnli.test_splits] == [("test_matched.tsv", "MNLI-m.tsv"),
                                                                   ("test_mismatched.tsv", "MNLI-mm.tsv")]


def test_ax_is_test_only():
    ax = get_task("ax")
    assert ax.train_file is None and ax.eval_splits == () and ax.label_col is None
    assert [(s.file, s.submission) for s in ax.test_splits] == [("diagnostic.tsv", "AX.tsv")]
    assert ax.dir == "diagnostic"


@pytest.mark.parametrize("name, selection", [
    ("cola", ("mcc",)), ("mrpc", ("f1", "accuracy")), ("qqp", ("f1", "accuracy")), ("stsb", ("pearson", "spearman")),
    ("sst2", ("accuracy",)), ("mnli", ("accuracy",)), ("qnli", ("accuracy",)), ("rte", ("accuracy",)),
    ("wnli", ("accuracy",)),
])
def test_selection_metrics(name, selection):
    task = get_task(name)
    assert task.selection == selection
    assert set(task.selection) <= set(task.metrics)


@pytest.mark.parametrize("name, submission", [("cola", "CoLA.tsv"), ("sst2", "SST-2.tsv"), ("mrpc", "MRPC.tsv"),
                                              ("stsb", "STS-B.tsv"), ("qqp", "QQP.tsv"), ("qnli", "QNLI.tsv"),
                                              ("rte", "RTE.tsv"), ("wnli", "WNLI.tsv")])
def test_submission_file_names(name, submission):
    assert [s.submission for s in get_task(name).test_splits] == [submission]


# --- reading the synthetic layout ---------------------------------------------------------------------------


def test_cola_headerless_labels_from_second_column(glue_dir):
    ds = load_split(get_task("cola"), "train", str(glue_dir))["train"]
    assert len(ds) == 24  # no line swallowed as a header
    assert ds["labels"] == [i % 2 for i in range(24)]
    first = (glue_dir / "CoLA" / "train.tsv").read_text().splitlines()[0].split("\t")
    assert ds[0]["text_a"] == first[3] and ds[0]["text_b"] is None
    assert ds["idx"] == list(range(24))


def test_mrpc_bom_header(glue_dir):
    assert (glue_dir / "MRPC" / "dev.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    ds = load_split(get_task("mrpc"), "dev", str(glue_dir))["dev"]
    assert len(ds) == 12
    assert ds["labels"] == [i % 2 for i in range(12)]  # "Quality" (the first, BOM-prefixed column) was found
    row = (glue_dir / "MRPC" / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1].split("\t")
    assert (ds[0]["text_a"], ds[0]["text_b"]) == (row[3], row[4])


def test_read_tsv_drops_bom_from_header(glue_dir):
    rows = read_tsv(glue_dir / "MRPC" / "train.tsv")
    assert list(rows[0][1]) == ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    assert rows[0][0] == 2  # line numbers count the header line


def test_stsb_float_labels(glue_dir):
    ds = load_split(get_task("stsb"), "dev", str(glue_dir))["dev"]
    assert ds["labels"] == pytest.approx([(i % 6) * 0.8 for i in range(12)])
    assert isinstance(ds[1]["labels"], float) and ds[1]["labels"] == pytest.approx(0.8)


def test_rte_labels_are_ids_in_task_order(glue_dir):
    ds = load_split(get_task("rte"), "train", str(glue_dir))["train"]
    assert ds["labels"] == [i % 2 for i in range(24)]  # entailment=0, not_entailment=1
    assert ds["idx"] == list(range(24))


def test_mnli_dev_matched_and_mismatched(glue_dir):
    splits = load_split(get_task("mnli"), "dev", str(glue_dir))
    assert list(splits) == ["dev", "dev_mm"]
    for ds in splits.values():
        assert len(ds) == 12 and ds["labels"] == [i % 3 for i in range(12)]


@pytest.mark.parametrize("task, names, n", [("rte", ["RTE.tsv"], 10), ("cola", ["CoLA.tsv"], 10),
                                            ("mrpc", ["MRPC.tsv"], 10), ("stsb", ["STS-B.tsv"], 10),
                                            ("mnli", ["MNLI-m.tsv", "MNLI-mm.tsv"], 10), ("ax", ["AX.tsv"], 10)])
def test_test_files_give_idx_in_order_and_no_labels(glue_dir, task, names, n):
    splits = load_split(get_task(task), "test", str(glue_dir))
    assert list(splits) == names
    for ds in splits.values():
        assert "labels" not in ds.column_names
        assert ds["idx"] == list(range(n))


def test_test_idx_comes_from_index_column(tmp_path):
    root = tmp_path / "glue"
    (root / "RTE").mkdir(parents=True)
    (root / "RTE" / "test.tsv").write_text("index\tsentence1\tsentence2\n7\ta\tb\n3\tc\td\n")
    ds = load_split(get_task("rte"), "test", str(root))["RTE.tsv"]
    assert ds["idx"] == [7, 3] and ds["text_a"] == ["a", "c"] and ds["text_b"] == ["b", "d"]


def test_ax_reads_diagnostic_file(glue_dir):
    ds = load_split(get_task("ax"), "test", str(glue_dir))["AX.tsv"]
    row = (glue_dir / "diagnostic" / "diagnostic.tsv").read_text().splitlines()[3].split("\t")
    assert (ds[2]["idx"], ds[2]["text_a"], ds[2]["text_b"]) == (2, row[1], row[2])


def test_ax_has_no_train_or_dev(glue_dir):
    with pytest.raises(ConfigError, match="no training data"):
        load_split(get_task("ax"), "train", str(glue_dir))
    with pytest.raises(ConfigError, match="no labelled dev set.*split=test"):
        load_split(get_task("ax"), "dev", str(glue_dir))


def test_bad_split_and_source(glue_dir):
    with pytest.raises(ConfigError, match="split must be train, dev or test, got 'valid'"):
        load_split(get_task("rte"), "valid", str(glue_dir))
    with pytest.raises(ConfigError, match=r"data\.source=csv is not one of tsv, hub \(tsv: glue_data"):
        check_config(compose_cfg("train", ["data.source=csv"]))  # the schema's words: loading never sees another


# --- bad input ----------------------------------------------------------------------------------------------


def test_malformed_row_names_file_and_line(tmp_path):
    root = tmp_path / "glue"
    (root / "RTE").mkdir(parents=True)
    bad = root / "RTE" / "dev.tsv"
    bad.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv:3: malformed row: expected 4 .* found 2") as e:
        load_split(get_task("rte"), "dev", str(root))
    assert str(bad) in str(e.value) and "Re-download" in str(e.value)


def test_headerless_malformed_row_line_number(tmp_path):
    root = tmp_path / "glue"
    (root / "CoLA").mkdir(parents=True)
    (root / "CoLA" / "dev.tsv").write_text("gj04\t1\t\tfine\ngj04\t0\t*\tbad\textra\n")
    with pytest.raises(ConfigError, match=r"CoLA/dev\.tsv:2: malformed row: expected 4"):
        load_split(get_task("cola"), "dev", str(root))


def test_blank_trailing_line_is_ignored(tmp_path):
    root = tmp_path / "glue"
    (root / "RTE").mkdir(parents=True)
    (root / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n\n")
    assert len(load_split(get_task("rte"), "dev", str(root))["dev"]) == 1


def test_quotes_are_literal_text(tmp_path):
    root = tmp_path / "glue"
    (root / "RTE").mkdir(parents=True)
    (root / "RTE" / "dev.tsv").write_text('index\tsentence1\tsentence2\tlabel\n0\t"a\tb "c"\tentailment\n')
    ds = load_split(get_task("rte"), "dev", str(root))["dev"]
    assert (ds[0]["text_a"], ds[0]["text_b"]) == ('"a', 'b "c"')


def test_empty_file(tmp_path):
    root = tmp_path / "glue"
    (root / "RTE").mkdir(parents=True)
    (root / "RTE" / "dev.tsv").write_text("")
    with pytest.raises(ConfigError, match=r"dev\.tsv is empty: expected a header line.*download_glue_data"):
        load_split(get_task("rte"), "dev", str(root))


def test_missing_data_dir_says_where_and_how(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="GLUE data directory not found") as e:
        load_split(get_task("rte"), "train", str(missing))
    msg = str(e.value)
    assert str(missing) in msg
    assert "download_glue_data.py" in msg and "data.glue_dir=" in msg and "GLUE_DIR" in msg


def test_default_dirs_listed_when_nothing_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="looked in") as e:
        resolve_glue_dir(None)
    for d in DEFAULT_GLUE_DIRS:
        assert str((tmp_path / d).resolve()) in str(e.value)


def test_default_dir_found_relative_to_cwd(tmp_path, monkeypatch, glue_dir):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.chdir(glue_dir.parent)
    assert resolve_glue_dir(None) == Path("glue_data")


def test_resolve_glue_dir_honours_env(tmp_path, monkeypatch, glue_dir):
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    monkeypatch.chdir(tmp_path)
    assert resolve_glue_dir(None) == glue_dir
    assert len(load_split(get_task("rte"), "dev")["dev"]) == 12  # used when data.glue_dir is unset
    other = Path(shutil.copytree(glue_dir, tmp_path / "explicit"))
    assert resolve_glue_dir(str(other)) == other  # an explicit dir wins over the environment


def test_env_glue_dir_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "envdir"))
    with pytest.raises(ConfigError, match="envdir"):
        resolve_glue_dir(None)


def test_missing_task_file(glue_dir):
    (glue_dir / "RTE" / "dev.tsv").unlink()
    with pytest.raises(ConfigError, match=r"Missing GLUE file for task rte: .*RTE/dev\.tsv does not exist") as e:
        load_split(get_task("rte"), "dev", str(glue_dir))
    assert "download_glue_data.py" in str(e.value)


def test_missing_task_dir(glue_dir):
    with pytest.raises(ConfigError, match=r"task qnli: .*QNLI/train\.tsv does not exist"):
        load_split(get_task("qnli"), "train", str(glue_dir))


def test_unknown_label_value(tmp_path):
    root = tmp_path / "glue"
    (root / "RTE").mkdir(parents=True)
    (root / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n")
    with pytest.raises(ConfigError, match=r"train\.tsv:3: unknown label 'maybe' for task rte; "
                                          r"expected one of \['entailment', 'not_entailment'\]"):
        load_split(get_task("rte"), "train", str(root))


def test_non_numeric_regression_label(glue_dir):
    path = glue_dir / "STS-B" / "dev.tsv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\thigh"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv:3: label 'high' is not a number \(task stsb is a regression"):
        load_split(get_task("stsb"), "dev", str(glue_dir))


def test_wrong_columns_named(glue_dir):
    (glue_dir / "RTE" / "dev.tsv").write_text("index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(ConfigError, match=r"column 'sentence1' not found; the file has columns "
                                          r"\['index', 'premise', 'hypothesis', 'label'\]"):
        load_split(get_task("rte"), "dev", str(glue_dir))


@pytest.mark.parametrize("task", ["rte", "mrpc", "stsb", "mnli", "cola"])
def test_test_file_read_as_labelled(glue_dir, task):
    t = get_task(task)
    d = glue_dir / t.dir
    for s, test in zip(t.eval_splits, t.test_splits):
        shutil.copy(d / test.file, d / s.file)
    with pytest.raises(ConfigError, match=rf"has no '{t.label_col}' column: it looks like an unlabelled test file, "
                                          "which cannot give metrics. Use split=test"):
        load_split(t, "dev", str(glue_dir))


# --- tokenising and batching --------------------------------------------------------------------------------


def test_tokenize_pairs_and_singles(glue_dir, tokenizer):
    pairs = tokenize(load_split(get_task("rte"), "dev", str(glue_dir))["dev"], tokenizer, 10)
    assert {"input_ids", "attention_mask", "token_type_ids", "labels", "idx"} <= set(pairs.column_names)
    assert "text_a" not in pairs.column_names and "text_b" not in pairs.column_names
    assert {len(x) for x in pairs["input_ids"]} == {10}  # every pair (13 tokens) truncated
    assert all(1 in tt for tt in pairs["token_type_ids"])  # a second segment
    singles = tokenize(load_split(get_task("cola"), "dev", str(glue_dir))["dev"], tokenizer, 64)
    assert all(set(tt) == {0} for tt in singles["token_type_ids"])
    ids = singles[0]["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and ids.count(tokenizer.sep_token_id) == 1


def test_tokenize_leaves_lengths_unpadded(tokenizer):
    import datasets

    ds = datasets.Dataset.from_dict({"idx": [0, 1], "text_a": ["a", "a much longer sentence than that"],
                                     "text_b": [None, None]})
    lens = [len(x) for x in tokenize(ds, tokenizer, 128)["input_ids"]]
    assert lens[0] == 3 and lens[1] > lens[0]


def test_subsample():
    import datasets

    ds = datasets.Dataset.from_dict({"x": list(range(5))})
    assert subsample(ds, 3)["x"] == [0, 1, 2]
    assert len(subsample(ds, 10)) == 5 and len(subsample(ds, None)) == 5 and len(subsample(ds, 0)) == 5


def test_datamodule_subsampling_and_dynamic_padding(glue_dir, tokenizer):
    dm = GlueDataModule(get_task("rte"), tokenizer, settings=DataSettings(
        glue_dir=str(glue_dir), max_seq_length=64, batch_size=4, eval_batch_size=5, max_train_samples=10,
        max_eval_samples=7))
    dm.setup("fit")
    assert len(dm.train_ds) == 10 and len(dm.eval_ds["dev"]) == 7
    loaders = dm.val_dataloader()
    assert len(loaders) == 1
    batches = list(loaders[0])
    assert [len(b["labels"]) for b in batches] == [5, 2]
    for b, start in zip(batches, (0, 5)):
        lens = [len(x) for x in dm.eval_ds["dev"][start:start + len(b["labels"])]["input_ids"]]
        assert b["input_ids"].shape == (len(lens), max(lens))  # padded to the longest in the batch
        assert max(lens) < 64  # not to max_seq_length
        assert b["attention_mask"].sum(1).tolist() == lens
        assert b["input_ids"].dtype == torch.long
    assert batches[0]["labels"].tolist() == [0, 1, 0, 1, 0]
    assert batches[0]["idx"].tolist() == [0, 1, 2, 3, 4]
    train = list(dm.train_dataloader())
    assert sum(len(b["labels"]) for b in train) == 10 and len(train) == 3
    assert set(model_inputs(train[0])) == {"input_ids", "attention_mask", "token_type_ids"}


def test_datamodule_mnli_has_two_val_loaders(glue_dir, tokenizer):
    dm = GlueDataModule(get_task("mnli"), tokenizer,
                        settings=DataSettings(glue_dir=str(glue_dir), max_seq_length=32, max_eval_samples=5))
    dm.setup()
    assert dm.eval_names == ["dev", "dev_mm"]
    assert [len(dl.dataset) for dl in dm.val_dataloader()] == [5, 5]


def test_datamodule_stsb_float_labels(glue_dir, tokenizer):
    dm = GlueDataModule(get_task("stsb"), tokenizer,
                        settings=DataSettings(glue_dir=str(glue_dir), max_seq_length=32, eval_batch_size=12))
    dm.setup()
    b = next(iter(dm.val_dataloader()[0]))
    assert b["labels"].dtype == torch.float32
    assert b["labels"].tolist() == pytest.approx([(i % 6) * 0.8 for i in range(12)])


def test_check_max_seq_length():
    check_max_seq_length(128, 128)
    check_max_seq_length(8, 512)
    with pytest.raises(ConfigError, match=r"max_seq_length=256 exceeds the model's position limit \(128\)\. "
                                          r"Set max_seq_length<=128"):
        check_max_seq_length(256, 128)
    with pytest.raises(ConfigError, match=r"max_seq_length=4 must be at least 8 \(tokens per example"):
        check_config(compose_cfg("predict", ["max_seq_length=4"]))  # the lower bound is the schema's
