"""The local target: the twin "AWS" on 127.0.0.1 and a real local Ray cluster it launches.

See ``raylab/target.py`` for the contract. Pieces: ``twin.py`` (the server process: moto + quotas,
MaxCount, capacity faults, control API), ``machines.py`` (instances -> local Ray nodes, inside the
twin), ``provider.py`` (Ray's AWSNodeProvider, loopback only), ``render.py`` (the local config form),
``head.py`` (head instance + `ray start --head`), ``control.py`` (control API client),
``declared.py`` (what the target declares in the contract's data members).
"""

from raylab.targets.local.target import LocalTarget

__all__ = ["LocalTarget"]
