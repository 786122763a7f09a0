"""BestOnDev: which evaluation is the best (an undefined score never is), and when patience stops a run."""

from __future__ import annotations

from reptiledistil.training.callbacks import BestOnDev


class _Module:
    outer_step = 0
    last_eval: dict = {}

    class eval_model:  # noqa: N801
        @staticmethod
        def save_pretrained(path):
            pass


class _Trainer:
    sanity_checking, is_global_zero, current_epoch, global_step, should_stop = False, True, 0, 0, False


def _evaluate(best: BestOnDev, scores: list[float]) -> list[bool]:
    """One dev evaluation per epoch with these selection scores; whether the run was told to stop after each."""
    trainer, stops = _Trainer(), []
    for epoch, score in enumerate(scores):
        _Module.last_eval = {"selection": score}
        trainer.current_epoch = epoch
        best.on_validation_end(trainer, _Module)
        stops.append(trainer.should_stop)
    return stops


def test_undefined_score_never_displaces_a_real_best(tmp_path):
    best = BestOnDev(tmp_path / "m", None)
    assert _evaluate(best, [0.3, float("nan"), 0.2]) == [False] * 3  # no patience: never stops
    assert best.best["selection"] == 0.3 and best.best["epoch"] == 1


def test_patience_counts_evaluations_since_the_best(tmp_path):
    best = BestOnDev(tmp_path / "m", None, patience=2)
    # best at epoch 2; epochs 3 and 4 do not beat it (a tie is no improvement): stop after epoch 4
    assert _evaluate(best, [0.3, 0.5, 0.4, 0.5, 0.2]) == [False, False, False, True, True]
    assert best.best["epoch"] == 2


def test_a_resumed_run_that_had_decided_to_stop_stops_at_once(tmp_path):
    """The epoch checkpoint is written after the evaluation that decided to stop: resuming it trains no more."""
    before = BestOnDev(tmp_path / "m", None, patience=2)
    _evaluate(before, [0.3, 0.5, 0.4, 0.5])
    resumed, trainer = BestOnDev(tmp_path / "m", None, patience=2), _Trainer()
    resumed.load_state_dict(before.state_dict())
    resumed.on_train_start(trainer, _Module)
    assert trainer.should_stop
    fresh, trainer = BestOnDev(tmp_path / "m", None, patience=2), _Trainer()
    fresh.on_train_start(trainer, _Module)
    assert not trainer.should_stop
