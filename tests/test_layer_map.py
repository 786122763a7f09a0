"""Layer mappings for each strategy and depth, and teacher/student parameter pairing."""

import pytest
import torch
from transformers import BertForSequenceClassification

from conftest import tiny_bert_config
from reptiledistil.core.errors import ConfigError
from reptiledistil.models.layer_map import copy_teacher_layers, encoder_layers, layer_mapping, parameter_pairs

TABLE = {
    (12, 6): {"first": [0, 1, 2, 3, 4, 5], "last": [6, 7, 8, 9, 10, 11], "skip": [1, 3, 5, 7, 9, 11],
              "both": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]},
    (6, 3): {"first": [0, 1, 2], "last": [3, 4, 5], "skip": [1, 3, 5], "both": [[0, 1], [2, 3], [4, 5]]},
    (4, 2): {"first": [0, 1], "last": [2, 3], "skip": [1, 3], "both": [[0, 1], [2, 3]]},
    (6, 6): {"first": [0, 1, 2, 3, 4, 5], "last": [0, 1, 2, 3, 4, 5], "skip": [0, 1, 2, 3, 4, 5],
             "both": [[0], [1], [2], [3], [4], [5]]},
}


@pytest.mark.parametrize("depths", list(TABLE))
@pytest.mark.parametrize("strategy", ["first", "last", "skip", "both"])
def test_mapping_tables(depths, strategy):
    want = [w if isinstance(w, list) else [w] for w in TABLE[depths][strategy]]
    assert layer_mapping(strategy, *depths) == want


def test_mapping_refusals():
    with pytest.raises(ConfigError, match="more layers"):
        layer_mapping("first", 3, 6)
    with pytest.raises(ConfigError, match="multiple of the student"):
        layer_mapping("skip", 12, 5)
    with pytest.raises(ConfigError, match="multiple of the student"):
        layer_mapping("both", 6, 4)
    assert layer_mapping("last", 12, 5) == [[7], [8], [9], [10], [11]]
    from conftest import compose_cfg
    from reptiledistil.config.schema import check_config

    with pytest.raises(ConfigError, match=r"strategy\.name=middle is not one of first, last, skip, both"):
        check_config(compose_cfg("train", ["strategy.name=middle"]))  # the schema's words: the mapping sees no other


def _bert(layers, hidden=32, labels=2, seed=0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(layers, hidden, num_labels=labels))


def test_pairs_follow_structure_and_shapes():
    t, s = _bert(4), _bert(2, seed=1)
    pairs = parameter_pairs(t, s, layer_mapping("both", 4, 2))
    # every teacher parameter is mapped for `both`; names line up layer by layer
    assert len(pairs) == len(list(t.parameters()))
    for tn, tp, si in zip(pairs.teacher_names, pairs.teacher_params, pairs.student_index):
        sn = pairs.student_names[si]
        assert tp.shape == pairs.student_params[si].shape
        if ".layer." in tn:
            tl, sl = int(tn.split(".layer.")[1].split(".")[0]), int(sn.split(".layer.")[1].split(".")[0])
            assert tl // 2 == sl and tn.split(".layer.")[1].split(".", 1)[1] == sn.split(".layer.")[1].split(".", 1)[1]
        else:
            assert tn == sn
    skip = parameter_pairs(t, s, layer_mapping("skip", 4, 2))
    assert not any(".layer.0." in n or ".layer.2." in n for n in skip.teacher_names)  # unmapped layers


def test_pairs_without_head_drop_only_the_classifier():
    t, s = _bert(4), _bert(2, seed=1)
    pairs = parameter_pairs(t, s, layer_mapping("skip", 4, 2))
    body = pairs.without_head(t.base_model_prefix)
    assert set(pairs.teacher_names) - set(body.teacher_names) == {"classifier.weight", "classifier.bias"}
    assert "bert.pooler.dense.weight" in body.teacher_names  # pretrained on both sides: not the task head
    for name, tp, si in zip(body.teacher_names, body.teacher_params, body.student_index):
        j = pairs.teacher_names.index(name)  # each kept pair still points at the same two parameters
        assert tp is pairs.teacher_params[j] and si == pairs.student_index[j]


def test_pairs_refuse_mismatches():
    with pytest.raises(ConfigError, match="width"):
        parameter_pairs(_bert(4, 32), _bert(2, 64), layer_mapping("skip", 4, 2))
    with pytest.raises(ConfigError, match="label count"):
        parameter_pairs(_bert(4, labels=3), _bert(2, labels=2), layer_mapping("skip", 4, 2))
    small_vocab = BertForSequenceClassification(_vocab_cfg())
    with pytest.raises(ConfigError, match="vocabulary"):
        parameter_pairs(_bert(4), small_vocab, layer_mapping("skip", 4, 2))


def _vocab_cfg():
    cfg = tiny_bert_config(2)
    cfg.vocab_size = 1000
    return cfg


def test_copy_teacher_layers_takes_mapped_layers():
    src, dst = _bert(4), _bert(2, seed=3)
    copy_teacher_layers(src, dst, layer_mapping("both", 4, 2))  # `both` initialises like `skip`: last of each group
    _, sl = encoder_layers(src)
    _, dl = encoder_layers(dst)
    for i, j in ((0, 1), (1, 3)):
        for (n, a), (_, b) in zip(dl[i].named_parameters(), sl[j].named_parameters()):
            assert torch.equal(a, b), n
    assert torch.equal(dst.bert.embeddings.word_embeddings.weight, src.bert.embeddings.word_embeddings.weight)
