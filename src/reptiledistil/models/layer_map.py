"""Which teacher layers each student layer stands for, and the teacher<->student parameter pairs.

Mappings come from layer indices and module structure (never from editing parameter names):
the encoder's layer list is found as the ModuleList of `num_hidden_layers` blocks; everything outside it
(embeddings, pooler, classifier) pairs one-to-one by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ConfigError


def layer_mapping(strategy: str, teacher_layers: int, student_layers: int) -> list[list[int]]:
    """mapping[i] = the teacher layers that student layer i is paired with (0-based).

    first: i -> i;  last: i -> Lt - Ls + i;  skip: i -> (i+1)k - 1;  both: i -> ik .. (i+1)k - 1;  k = Lt / Ls.
    12 -> 6 with skip gives 1, 3, 5, 7, 9, 11 (the paper's choice). The strategy is one of these four words (the
    schema's, config/schema.py StrategyConfig).
    """
    lt, ls = teacher_layers, student_layers
    if ls < 1 or lt < 1:
        raise ConfigError(f"Layer counts must be positive (teacher {lt}, student {ls}).")
    if ls > lt:
        raise ConfigError(f"The student has more layers ({ls}) than the teacher ({lt}); "
                          "a student must be at most as deep as its teacher. Use a shallower student.")
    if strategy == "first":
        return [[i] for i in range(ls)]
    if strategy == "last":
        return [[lt - ls + i] for i in range(ls)]
    if lt % ls:
        raise ConfigError(f"strategy={strategy} needs the teacher depth ({lt}) to be a multiple of the student "
                          f"depth ({ls}); use strategy=first or strategy=last, or another student depth.")
    k = lt // ls
    if strategy == "skip":
        return [[(i + 1) * k - 1] for i in range(ls)]
    return [list(range(i * k, (i + 1) * k)) for i in range(ls)]


def encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, module) of the transformer block list: the ModuleList of num_hidden_layers blocks."""
    n = model.config.num_hidden_layers
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if not found and hasattr(model.config, "num_hidden_groups"):  # ALBERT: one block applied n times
        raise ConfigError(f"{type(model).__name__} shares one set of weights across its {n} layers (ALBERT-style), so "
                          "no student layer can stand for one teacher layer. Use a model with separate layers "
                          "(BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, DeBERTa-v2).")
    if len(found) != 1:
        raise ConfigError(f"Cannot find the encoder layer list of {type(model).__name__} "
                          f"(ModuleLists of {n} blocks: {[f[0] for f in found]}).")
    return found[0]


@dataclass
class ParamPairs:
    """teacher_params[j] is paired with student_params[student_index[j]] (several teacher params may share one)."""

    teacher_names: list[str]
    teacher_params: list[nn.Parameter]
    student_names: list[str]
    student_params: list[nn.Parameter]
    student_index: list[int]

    def __len__(self) -> int:
        return len(self.teacher_params)

    def without_head(self, base_model_prefix: str) -> ParamPairs:
        """These pairs minus the task head: every teacher parameter outside the pretrained base model
        (`bert.`, `roberta.`, ...), i.e. the classifier and any pooler the head adds."""
        keep = [j for j, name in enumerate(self.teacher_names) if name.startswith(base_model_prefix + ".")]
        return ParamPairs([self.teacher_names[j] for j in keep], [self.teacher_params[j] for j in keep],
                          self.student_names, self.student_params, [self.student_index[j] for j in keep])


def _check_shape(tname: str, t: torch.Tensor, sname: str, s: torch.Tensor) -> None:
    if t.shape != s.shape:
        rows_differ = t.shape[0] != s.shape[0] and t.shape[1:] == s.shape[1:]
        what = "width"  # hidden size: every other difference follows from it
        if rows_differ and "word_embeddings" in tname:
            what = "vocabulary"
        elif rows_differ and "classifier" in tname:
            what = "label count"
        raise ConfigError(f"Teacher and student differ in {what}: {tname} {tuple(t.shape)} vs {sname} {tuple(s.shape)}. "
                          "The student must have the teacher's hidden size, vocabulary and number of labels.")


def parameter_pairs(teacher: nn.Module, student: nn.Module, mapping: list[list[int]]) -> ParamPairs:
    """Pair every mapped teacher parameter with its student parameter, checking shapes."""
    t_family, s_family = (getattr(m.config, "model_type", None) for m in (teacher, student))
    if t_family != s_family:
        raise ConfigError(f"The teacher is a {t_family} model and the student a {s_family} model: the teacher's update "
                          "pairs their parameters one by one, so both must come from one model family (and share a "
                          "vocabulary). Build the student from the teacher's family (model.student.source=<a "
                          f"{t_family} model>).")
    t_prefix, t_layers = encoder_layers(teacher)
    s_prefix, s_layers = encoder_layers(student)
    if len(mapping) != len(s_layers) or max(j for js in mapping for j in js) >= len(t_layers):
        raise ConfigError(f"Layer mapping {mapping} does not fit a {len(t_layers)}-layer teacher "
                          f"and a {len(s_layers)}-layer student.")
    s_named = list(student.named_parameters())
    s_pos = {name: i for i, (name, _) in enumerate(s_named)}
    pairs = ParamPairs([], [], [n for n, _ in s_named], [p for _, p in s_named], [])

    def add(tname: str, tp: nn.Parameter, sname: str) -> None:
        _check_shape(tname, tp, sname, s_named[s_pos[sname]][1])
        pairs.teacher_names.append(tname)
        pairs.teacher_params.append(tp)
        pairs.student_index.append(s_pos[sname])

    # Outside the encoder: same names on both sides.
    t_outside = {n: p for n, p in teacher.named_parameters() if not n.startswith(t_prefix + ".")}
    s_outside = {n for n in s_pos if not n.startswith(s_prefix + ".")}
    if set(t_outside) != s_outside:
        raise ConfigError("Teacher and student are different architectures: parameters outside the encoder differ "
                          f"({sorted(set(t_outside) ^ s_outside)[:5]}).")
    for name, tp in t_outside.items():
        add(name, tp, name)
    # Encoder blocks: teacher layer j <- student layer i for every j in mapping[i], matched by relative name.
    for i, t_idx in enumerate(mapping):
        s_block = dict(s_layers[i].named_parameters())
        for j in t_idx:
            t_block = dict(t_layers[j].named_parameters())
            if set(t_block) != set(s_block):
                raise ConfigError(f"Teacher layer {j} and student layer {i} have different parameters.")
            for rel, tp in t_block.items():
                add(f"{t_prefix}.{j}.{rel}", tp, f"{s_prefix}.{i}.{rel}")
    return pairs


def copy_teacher_layers(source: nn.Module, student: nn.Module, mapping: list[list[int]]) -> None:
    """Initialise `student` from `source` (same widths, more layers): every non-encoder parameter by name,
    and student layer i from the last teacher layer of mapping[i] (for `both`, the same layer `skip` picks)."""
    pairs = parameter_pairs(source, student, mapping)
    init_from = {}
    for tname, tp, si in zip(pairs.teacher_names, pairs.teacher_params, pairs.student_index):
        init_from[si] = tp  # later teacher layers overwrite earlier ones: the last of each group wins
    with torch.no_grad():
        for si, tp in init_from.items():
            pairs.student_params[si].copy_(tp)
