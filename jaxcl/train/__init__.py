"""Training: the one loop, the jitted step, the sharded train state, gradient caching, optimisers and
schedules, Orbax checkpoints, and the data mesh (with the multi-host start).

Every part takes plain arguments; ``jaxcl.experiment`` turns a config into them. Modules: ``loop``
(``fit``), ``state`` (``TrainSetup``), ``step`` (``make_train_step``), ``grad_cache``, ``optim``,
``checkpoint`` (``Checkpointer``), ``preemption`` (stop on SIGTERM / Ctrl-C), ``lock`` (one writer per workdir), ``mesh`` (``make_mesh``, ``shard_batch``, ``initialize_distributed``).
"""

from jaxcl.train import checkpoint, grad_cache, lock, mesh, optim, preemption
from jaxcl.train.checkpoint import Checkpointer
from jaxcl.train.loop import FitResult, NonFiniteError, fit
from jaxcl.train.preemption import PREEMPTED_EXIT_CODE, Preempted
from jaxcl.train.state import TrainSetup, run_keys
from jaxcl.train.step import make_train_step

__all__ = ["Checkpointer", "FitResult", "NonFiniteError", "PREEMPTED_EXIT_CODE", "Preempted",
           "TrainSetup", "checkpoint", "fit", "grad_cache", "lock", "make_train_step", "mesh", "optim",
           "preemption", "run_keys"]
