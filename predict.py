"""python predict.py [overrides]   (see conf/predict.yaml)"""

import hydra

from reptiledistil.config.cli import report_errors, run_entry_point


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
@report_errors  # checks the config before any library loads, and hands main the checked one
def main(cfg):
    from reptiledistil.pipelines.predict import predict  # here, not above: Hydra's errors come before the slow imports

    return predict(cfg)


if __name__ == "__main__":
    run_entry_point(main)  # Hydra's own errors (unknown key or option) exit 2 with `error: ...`, like ours
