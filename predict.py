"""python predict.py [overrides]   (see conf/predict.yaml)"""

import hydra
from omegaconf import DictConfig

from reptiledistil.cli import report_errors, setup_entry_point
from reptiledistil.run import predict


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
@report_errors
def main(cfg: DictConfig):
    return predict(cfg)


if __name__ == "__main__":
    setup_entry_point()
    main()
