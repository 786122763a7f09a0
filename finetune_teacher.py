"""python finetune_teacher.py [overrides]   (see conf/finetune_teacher.yaml)"""

import hydra

from reptiledistil.config.cli import report_errors, run_entry_point


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune_teacher")
@report_errors  # checks the config before any library loads, and hands main the checked one
def main(cfg):
    from reptiledistil.pipelines.teacher import finetune  # here, not above: Hydra's errors come before the slow imports

    return finetune(cfg)


if __name__ == "__main__":
    run_entry_point(main)  # Hydra's own errors (unknown key or option) exit 2 with `error: ...`, like ours
