"""Hydra plugin entry: the actionlab SLURM launcher (implementation in ``actionlab.slurm``).

Hydra only instantiates launchers defined under the ``hydra_plugins`` package.
"""

from actionlab.slurm import SlurmLauncherImpl

if SlurmLauncherImpl is not None:

    class SlurmLauncher(SlurmLauncherImpl):
        """``hydra/launcher=slurm`` (``conf/hydra/launcher/slurm.yaml``)."""
