"""The machine, no math: the array backend (NumPy or CuPy, :mod:`.backend`), the engine's worker
threads (:mod:`.threads`), BLAS thread control (:mod:`.blas`), process memory settings
(:mod:`.memory`) and reusable scratch buffers under the workspace limit (:mod:`.workspace`)."""
from convtrain.runtime.backend import Backend, array_module, get_backend
from convtrain.runtime.threads import (get_num_threads, get_pin_threads, set_num_threads,
                                       set_pin_threads)
from convtrain.runtime.memory import keep_freed_memory
from convtrain.runtime.workspace import Workspace, get_max_workspace_mb, set_max_workspace_mb

__all__ = [
    "Backend", "Workspace", "array_module", "get_backend", "get_max_workspace_mb",
    "get_num_threads", "get_pin_threads", "keep_freed_memory", "set_max_workspace_mb",
    "set_num_threads", "set_pin_threads",
]
