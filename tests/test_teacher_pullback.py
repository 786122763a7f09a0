"""bench/teacher_pullback.py: per-layer distances of a teacher from the pretrained weights it was tuned from."""

import sys
from pathlib import Path

import torch
from transformers import BertForSequenceClassification

from conftest import tiny_bert_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from teacher_pullback import layer_distances  # noqa: E402


def test_layer_distances_measure_only_each_layers_own_change(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(3, 32))
    pretrained = model.bert.state_dict()  # base-model names, as AutoModel loads them
    pretrained = {k: v.clone() for k, v in pretrained.items()}
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.bias.add_(0.5)  # 32 entries moved by 0.5: L2 = 0.5 * sqrt(32)
        model.classifier.weight.add_(1.0)  # the head is not an encoder layer
    model.save_pretrained(tmp_path / "m")
    d = layer_distances(tmp_path / "m", pretrained)
    assert d[0] == 0.0 and d[2] == 0.0
    assert abs(d[1] - 0.5 * 32 ** 0.5) < 1e-5
