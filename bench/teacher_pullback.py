"""How much of its fine-tuning a teacher still has after it has taught (ReptileDistil, MetaDistil).

Per encoder layer, the L2 distance of the teacher's weights from the pretrained model it was fine-tuned from:
after fine-tuning, and after each distillation run that updated it. Reptile pulls the mapped teacher layers
towards a student that starts from the pretrained layers, so this says how much of the fine-tuning it undid.

  python bench/teacher_pullback.py model/grid/minilm/cola model/grid/minilm/mrpc
  python bench/teacher_pullback.py <grid task dir> --pretrained <model the teacher was fine-tuned from>

A grid task directory holds `teacher/` and the runs' `<method>-seed<N>/teacher/` (bench/reproduce.py writes them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from reptiledistil.models.layer_map import encoder_layers  # noqa: E402


def layer_distances(model_dir: Path, pretrained: dict[str, torch.Tensor]) -> list[float]:
    """||theta_layer - theta_layer_pretrained|| for each encoder layer of the model in `model_dir`."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    prefix, layers = encoder_layers(model)
    base = prefix.split(".", 1)[1]  # pretrained (base model) names lack the `bert.` of the classifier model
    out = []
    for i, layer in enumerate(layers):
        sq = sum(float((p.detach() - pretrained[f"{base}.{i}.{name}"]).pow(2).sum())
                 for name, p in layer.named_parameters())
        out.append(sq ** 0.5)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task_dirs", nargs="+", type=Path, help="grid task directories (teacher/, <run>/teacher/)")
    ap.add_argument("--pretrained", help="the model the teacher was fine-tuned from (default: the offline MiniLM)")
    args = ap.parse_args()
    for d in args.task_dirs:
        if not (d / "teacher" / "config.json").is_file():
            sys.exit(f"{d} has no teacher/ with a model in it: pass a grid task directory such as "
                     "model/grid/minilm/cola (bench/reproduce.py writes them).")
    from transformers import AutoModel

    from reptiledistil.models.loading import minilm_dir

    pretrained = AutoModel.from_pretrained(args.pretrained or minilm_dir()).state_dict()
    figures: dict[str, dict] = {}
    print(f"{'task / run':<40}{'distance from pretrained, per encoder layer (L2)':<52}"
          f"{'share of fine-tuned distance':>30}")
    for d in args.task_dirs:
        label = f"{d.parent.name}/{d.name}"  # preset (and tag) / task: probes of one task stay apart
        tuned = layer_distances(d / "teacher", pretrained)
        figures[label] = {"teacher": tuned}
        print(f"{label + ' / fine-tuned':<40}{'  '.join(f'{x:5.2f}' for x in tuned):<52}")
        for run in sorted(p.parent.parent for p in d.glob("*-seed*/teacher/config.json")):
            taught = layer_distances(run / "teacher", pretrained)
            # only the layers the run changed: an unmapped layer keeps all of its fine-tuning
            moved = [i for i, (a, b) in enumerate(zip(tuned, taught)) if abs(a - b) > 1e-6]
            share = [taught[i] / tuned[i] for i in moved]
            figures[label][run.name] = {"distances": taught, "changed_layers": moved,
                                         "share_of_finetuned_distance": share}
            span = f"{100 * min(share):.0f}-{100 * max(share):.0f}% (layers {moved})" if share else "unchanged"
            print(f"{label + ' / ' + run.name:<40}{'  '.join(f'{x:5.2f}' for x in taught):<52}{span:>30}")
    print(f"wrote {write_results('teacher_pullback', {'runs': figures})}")


if __name__ == "__main__":
    main()
