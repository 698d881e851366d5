"""The Ray executor: trains a run's chunks as Ray tasks on a cluster; only the driver writes.

The driver puts the job (features, labels, masks, seeds, recipe) in Ray's object store once,
keeps at most ``max_in_flight`` chunks submitted and not yet written, and writes each
finished chunk's outputs through ``on_chunk`` as soon as it returns. Workers need no shared
disk and never touch the run store.

Faults: a task whose worker process or node dies is retried by Ray up to ``max_retries``
times. A chunk that still fails is left unwritten, the driver carries on with the others,
and at the end raises :class:`~tailscope.errors.TailscopeError` naming the failed models;
calling ``run.train`` again trains exactly those. An exception raised by the training code
itself (bad input, a bug) is not retried: the driver stops and re-raises it.

Reproducibility: a chunk's rows depend only on the job and the chunk's model indices (each
model trains from its own seed), so a retried chunk, a resumed run and a local run give the
same rows: bit for bit where the same kernels run the same shapes (the same CPU kind and
torch build, the same threads per task as the local run), and within float round-off where
they do not (other thread counts or CPU kinds; see docs/design.md).

Connections: ``run`` connects to the cluster, puts the job and disconnects on every call,
unless called inside :meth:`RayExecutor.session`, which keeps one connection and one copy of
the job for all its calls (``Run.train`` opens one around its adaptive-stopping rounds).

Ray is optional: this module imports it only when an executor is created.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from tailscope.engine import ModelOutputs
from tailscope.errors import DataError, TailscopeError
from tailscope.execute.base import ChunkCallback, TrainingJob
from tailscope.execute.local import LocalExecutor

__all__ = ["RayExecutor"]

#: Seconds to wait for a TCP answer from the head before connecting Ray to it.
_CONNECT_CHECK_TIMEOUT_S = 5.0


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise DataError(
            "executor='ray' needs Ray, which is not installed: pip install 'tailscope[ray]'"
        ) from None
    return ray


def _train_chunk(job: TrainingJob, models: np.ndarray, num_threads: int) -> ModelOutputs:
    """Ray task: train the models ``models`` of ``job``; returns their outputs.

    Runs on a worker, through the local executor, so a chunk trains exactly as it would in
    the driver. ``job`` arrives zero-copy from the object store, so its arrays are
    read-only; the engine never writes to them.
    """
    import torch

    torch.set_num_threads(num_threads)
    done: list[ModelOutputs] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        LocalExecutor().run(job, [models], lambda _, outputs: done.append(outputs))
    return done[0]


@dataclass
class _Session:
    """What one :meth:`RayExecutor.session` holds: its job, that job's ObjectRef once put,
    and whether it made the connection (and so must end it)."""

    job: TrainingJob
    job_ref: object | None = None
    connected_here: bool = False


class RayExecutor:
    """Train chunks of models as Ray tasks, ``num_cpus_per_task`` CPUs (and torch threads)
    each, with at most ``max_in_flight`` chunks submitted and not yet written.

    Args:
        address: the cluster's head as ``HOST:PORT`` (or any address ``ray.init`` takes,
            such as ``"ray://HOST:10001"``). ``None`` starts a private single-machine Ray
            instance (``ray.init(address="local")``) for the duration of ``run`` (or of a
            :meth:`session`). If this process already called ``ray.init``, that connection
            is used and left open.
        num_cpus_per_task: CPUs reserved for each task; the task runs torch with as many
            threads.
        num_gpus_per_task: GPUs reserved for each task; default 1 when the job trains on an
            accelerator (``device != "cpu"``), else 0. Fractions share a GPU.
        max_in_flight: chunks submitted and not yet written, at most; bounds the memory
            their results hold. Default: twice the cluster's CPUs over ``num_cpus_per_task``
            (at least 2).
        max_retries: times Ray reruns a task whose worker or node died.
        runtime_env: Ray runtime environment for the tasks (e.g. ``{"py_modules": [...]}``
            to ship code the workers cannot import).
        init_options: further keyword arguments for ``ray.init`` (e.g. ``log_to_driver``).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus_per_task: int = 1,
        num_gpus_per_task: float | None = None,
        max_in_flight: int | None = None,
        max_retries: int = 3,
        runtime_env: Mapping[str, object] | None = None,
        init_options: Mapping[str, object] | None = None,
    ) -> None:
        _import_ray()
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise DataError(f"address must be a Ray address such as 'HOST:PORT', got {address!r}")
        _check_count("num_cpus_per_task", num_cpus_per_task, minimum=1)
        if num_gpus_per_task is not None and not (
            isinstance(num_gpus_per_task, int | float)
            and not isinstance(num_gpus_per_task, bool)
            and num_gpus_per_task >= 0
        ):
            raise DataError(f"num_gpus_per_task must be a number >= 0, got {num_gpus_per_task!r}")
        if max_in_flight is not None:
            _check_count("max_in_flight", max_in_flight, minimum=1)
        _check_count("max_retries", max_retries, minimum=0)
        self.address = address.strip() if address is not None else None
        self.num_cpus_per_task = int(num_cpus_per_task)
        self.num_gpus_per_task = num_gpus_per_task
        self.max_in_flight = max_in_flight
        self.max_retries = int(max_retries)
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.init_options = dict(init_options or {})
        self._session: _Session | None = None

    def __repr__(self) -> str:
        return (
            f"RayExecutor(address={self.address!r}, num_cpus_per_task={self.num_cpus_per_task}, "
            f"max_in_flight={self.max_in_flight}, max_retries={self.max_retries})"
        )

    # ---- the executor protocol ---------------------------------------------------------
    @contextlib.contextmanager
    def session(self, job: TrainingJob) -> Iterator[None]:
        """Keep one connection and one object-store copy of ``job`` for every :meth:`run`
        inside: ``with executor.session(job): executor.run(job, ...); executor.run(job, ...)``.

        Connects on the first ``run`` (so a session that runs nothing costs nothing), puts
        ``job`` once, and at exit shuts down the connection only if it made it. A ``run`` of
        another job inside puts that job for its own call. Nested sessions share the
        outermost one.
        """
        if self._session is not None:
            yield
            return
        ray = _import_ray()
        self._session = _Session(job)
        try:
            yield
        finally:
            session, self._session = self._session, None
            session.job_ref = None  # the last reference: Ray frees the object store copy
            if session.connected_here:
                ray.shutdown()

    def run(
        self,
        job: TrainingJob,
        chunks: Iterable[np.ndarray],
        on_chunk: ChunkCallback,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Train every chunk on the cluster; write each through ``on_chunk`` as it returns.

        Outside a :meth:`session`, connects (unless this process is connected) and
        disconnects again; inside, uses the session's connection and copy of the job.

        Raises:
            TailscopeError: the cluster cannot be reached, or some chunks failed after
                ``max_retries`` retries (the others are written; train again to redo them).
        """
        ray = _import_ray()
        chunks = [np.asarray(c, dtype=np.int64) for c in chunks]
        if not chunks:
            return
        with self.session(job):
            self._run_chunks(ray, job, chunks, on_chunk, progress)

    def _run_chunks(
        self,
        ray: ModuleType,
        job: TrainingJob,
        chunks: list[np.ndarray],
        on_chunk: ChunkCallback,
        progress: Callable[[int], None] | None,
    ) -> None:
        """The body of :meth:`run`, inside a session."""
        job_ref = self._job_ref(ray, job)  # every task reads this one copy
        pending: dict[object, np.ndarray] = {}  # ObjectRef -> its chunk's model indices
        failed: list[tuple[np.ndarray, BaseException]] = []
        try:
            task = ray.remote(_train_chunk).options(
                num_cpus=self.num_cpus_per_task,
                num_gpus=self._num_gpus(job),
                max_retries=self.max_retries,
                retry_exceptions=False,
            )
            limit = self.max_in_flight or self._default_max_in_flight(ray)
            queue = iter(chunks)
            next_chunk = next(queue, None)
            while pending or next_chunk is not None:
                while next_chunk is not None and len(pending) < limit:
                    pending[task.remote(job_ref, next_chunk, self.num_cpus_per_task)] = next_chunk
                    next_chunk = next(queue, None)
                [ref], _ = ray.wait(list(pending), num_returns=1)
                models = pending.pop(ref)
                try:
                    outputs = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    raise _task_error(err) from None
                except ray.exceptions.RayError as err:  # worker/node lost after retries
                    failed.append((models, err))
                    continue
                finally:
                    del ref
                on_chunk(models, outputs)
                del outputs
                if progress is not None:
                    progress(len(models))
        finally:
            for ref in pending:  # only after an error: stop work nobody will write
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
        if failed:
            models = np.concatenate([m for m, _ in failed])
            raise TailscopeError(
                f"{len(failed)} of {len(chunks)} chunks failed on Ray after "
                f"{self.max_retries} retries (models {_ranges(models)}; first error: "
                f"{_first_line(failed[0][1])}); their rows were not written, train again to "
                "retry them"
            )

    # ---- connecting --------------------------------------------------------------------
    def _job_ref(self, ray: ModuleType, job: TrainingJob) -> object:
        """``job`` in the object store, connecting first if the session has not yet; the
        session's job is put once, any other job on every call."""
        session = self._session
        if self._connect(ray):
            session.connected_here = True
            session.job_ref = None  # a ref from a connection since shut down is void
        if job is not session.job:
            return ray.put(job)
        if session.job_ref is None:
            session.job_ref = ray.put(job)
        return session.job_ref

    def _connect(self, ray: ModuleType) -> bool:
        """Connect this process to Ray; True when this call made the connection (and so
        must end it)."""
        if ray.is_initialized():
            return False
        options = {**self.init_options}
        if self.runtime_env is not None:
            options["runtime_env"] = self.runtime_env
        if self.address is None:
            options.setdefault("include_dashboard", False)
            ray.init(address="local", **options)
        else:
            _check_reachable(self.address, ray)
            ray.init(address=self.address, **options)
        return True

    def _default_max_in_flight(self, ray: ModuleType) -> int:
        cpus = ray.cluster_resources().get("CPU", 0)
        return max(2, int(2 * cpus) // self.num_cpus_per_task)

    def _num_gpus(self, job: TrainingJob) -> float:
        if self.num_gpus_per_task is not None:
            return self.num_gpus_per_task
        return 0 if str(job.device).split(":")[0] == "cpu" else 1


def _check_reachable(address: str, ray: ModuleType) -> None:
    """Fail in seconds, with one line, where ``ray.init`` would wait for a dead head forever.

    Only plain ``HOST:PORT`` addresses are checked. Ray connects to a loopback address
    through this machine's own IP unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, so that
    address is the one tried.
    """
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    host = host.strip("[]")
    target = host
    if _is_loopback(host):
        target = ray.util.get_node_ip_address()
    try:
        socket.create_connection((target, int(port)), timeout=_CONNECT_CHECK_TIMEOUT_S).close()
        return
    except OSError as err:
        reason = err.strerror or type(err).__name__
    if target != host and _answers(host, int(port)):
        raise TailscopeError(
            f"the Ray head at {address} listens on loopback only, but Ray connects through "
            f"this machine's address {target}: set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for "
            "this process (see docs/ray.md)"
        )
    raise TailscopeError(
        f"no Ray cluster answers at {address} ({reason}); start one with `ray start --head` "
        "or check the address"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=_CONNECT_CHECK_TIMEOUT_S).close()
    except OSError:
        return False
    return True


# ---- small helpers ---------------------------------------------------------------------
def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _task_error(err: BaseException) -> BaseException:
    """The exception a task raised, as the driver should see it: tailscope's own errors
    unchanged (one line for the CLI), an import failure on the workers with a hint, anything
    else as Ray's error carrying the remote traceback."""
    cause = getattr(err, "cause", None)
    cause = getattr(cause, "client_exc", cause)  # a task argument the worker could not load
    if isinstance(cause, TailscopeError):
        return cause
    if isinstance(cause, ImportError):
        return TailscopeError(
            f"Ray workers cannot import what the job needs ({cause}); install tailscope and "
            "your model code on every node, or pass runtime_env={'py_modules': [...]}"
        )
    return err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _ranges(models: np.ndarray) -> str:
    """``[0,1,2,5,6]`` -> ``"0-2, 5-6"``."""
    models = np.sort(models)
    breaks = np.flatnonzero(np.diff(models) != 1) + 1
    parts = np.split(models, breaks)
    return ", ".join(f"{p[0]}-{p[-1]}" if len(p) > 1 else f"{p[0]}" for p in parts)
