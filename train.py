"""python train.py [overrides]   (see conf/train.yaml)"""

import hydra

from reptiledistil.config.cli import report_errors, run_entry_point


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_errors  # checks the config before any library loads, and hands main the checked one
def main(cfg) -> float:
    from reptiledistil.pipelines.distil import distil  # here, not above: Hydra's errors come before the slow imports

    # The dev selection score of the best epoch: what hparams_search=optuna maximises.
    return distil(cfg)["best"]["selection"]


if __name__ == "__main__":
    run_entry_point(main)  # Hydra's own errors (unknown key or option) exit 2 with `error: ...`, like ours
