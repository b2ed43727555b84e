"""Train a video model: ``python train.py [model=rubiks_large data=ssv2 ...]`` (see README)."""

import hydra
from omegaconf import DictConfig

import actionlab  # noqa: F401  (registers the config resolvers)
from actionlab.train import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
