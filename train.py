"""python train.py [overrides]   (see conf/train.yaml)"""

import hydra
from omegaconf import DictConfig

from reptiledistil.cli import report_errors, setup_entry_point
from reptiledistil.run import distil


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_errors
def main(cfg: DictConfig) -> float:
    # The dev selection score of the best epoch: what hparams_search=optuna maximises.
    return distil(cfg)["best"]["selection"]


if __name__ == "__main__":
    setup_entry_point()
    main()
