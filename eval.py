"""Evaluate a checkpoint: ``python eval.py ckpt_path=PATH [eval.protocol=1clip data.root=...]``."""

import hydra
from omegaconf import DictConfig

import actionlab  # noqa: F401  (registers the config resolvers)
from actionlab.evaluate import run


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
