"""Train a video model: ``python train.py [model=rubiks_large data=ssv2 ...]`` (see README)."""

import hydra
from omegaconf import DictConfig

import actionlab  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported here, not at the top: it pulls in torch and Lightning (~4.5 s of CPU), which a
    # ``-m hydra/launcher=slurm`` submission never uses (it composes, submits and waits); the
    # jobs, and every local run, import it on their first call as before.
    from actionlab.train import run

    metrics = run(cfg)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
