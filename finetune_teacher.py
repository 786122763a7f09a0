"""python finetune_teacher.py [overrides]   (see conf/finetune_teacher.yaml)"""

import hydra
from omegaconf import DictConfig

from reptiledistil.cli import report_errors, setup_entry_point
from reptiledistil.run import finetune


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune_teacher")
@report_errors
def main(cfg: DictConfig):
    return finetune(cfg)


if __name__ == "__main__":
    setup_entry_point()
    main()
