"""The Ray executor on a real Ray head on loopback: same rows as a local run, and worker
processes killed mid-run (by pid) cost nothing but time.

The head is started once for the module by :class:`~tailscope.execute.ray_head.LoopbackHead`,
which stops only the Ray processes it started (never ``ray stop``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import tailscope as ts
from ray_head import LOOPBACK_ENV, LoopbackHead, free_port
from rounding import assert_same_up_to_rounding
from tailscope.data import features
from tailscope.engine import ModelOutputs
from tailscope.errors import DataError, TailscopeError
from tailscope.execute import get_executor

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="Ray is not installed: pip install 'tailscope[ray]'"
)
needs_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds Ray worker pids through /proc"
)

#: A recipe the workers can import (a function from tailscope, not from this test file).
RECIPE = ts.Recipe(
    name="tiny-mlp",
    build=partial(ts.models.mlp, hidden=(32,)),
    epochs=100,
    batch_size=32,
    lr=0.1,
    momentum=0.9,
)
SPEC = {"n_models": 12, "ratio": 0.7, "seed": 3, "models_per_step": 2}


# ---- fixtures: the environment, a loopback head, a local reference run ----------------------
@pytest.fixture(scope="module", autouse=True)
def ray_env():
    """Set before this process first imports Ray, which reads them at import time."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in LOOPBACK_ENV.items():
            mp.setenv(key, value)
        yield


@pytest.fixture(scope="module")
def ray_head():
    """A 2-CPU Ray head on 127.0.0.1: its ``address`` and the ``pid`` of ``ray start``."""
    if not HAVE_RAY:
        pytest.skip("Ray is not installed")
    with LoopbackHead(num_cpus=2, object_store_memory=200_000_000) as head:
        yield head


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, digits):
    """The reference: the same spec trained in this process."""
    path = tmp_path_factory.mktemp("local") / "run"
    with _torch_threads(1):
        return ts.Run.create(path, digits, RECIPE, **SPEC).train(progress=False)


@contextlib.contextmanager
def _torch_threads(n: int):
    """One thread, as each Ray task here: a cluster run equals a local one bit for bit only
    with the same threads per task (other counts: round-off, see tests/rounding.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _new_run(path, digits):
    return ts.Run.create(path, digits, RECIPE, **SPEC)


def _assert_same_results(run, reference):
    assert run.n_finished == reference.n_finished == SPEC["n_models"]
    assert np.array_equal(run.store.masks, reference.store.masks)
    for name in ModelOutputs.ROWS:
        assert np.array_equal(run.store.rows(name), reference.store.rows(name)), name
    for ours, theirs in zip(
        run.store.oos_probabilities(), reference.store.oos_probabilities(), strict=True
    ):
        assert np.array_equal(ours, theirs, equal_nan=True)
    with warnings.catch_warnings():  # 12 models leave a few examples in every subset
        warnings.simplefilter("ignore", ts.estimate.UndefinedEstimateWarning)
        ours, theirs = run.estimate(), reference.estimate()
        # NaN (undefined) estimates compare equal to NaN here.
        np.testing.assert_array_equal(ours.memorization, theirs.memorization)
        np.testing.assert_array_equal(ours.memorization_se, theirs.memorization_se)
        pairs = ours.high_influence_pairs(infl=0.1, mem=0.0, fdr=None)
    assert len(pairs) > 0
    assert pairs.equals(theirs.high_influence_pairs(infl=0.1, mem=0.0, fdr=None))


# ---- killing a worker (by pid, found through /proc) ---------------------------------------
def _descendants(root: int) -> list[int]:
    """Pids of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _running_chunk_pids(head_pid: int) -> list[int]:
    """Workers of our head now running a chunk (Ray titles them ``ray::<task name>``)."""
    pids = []
    for pid in _descendants(head_pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::_train_chunk"):
                pids.append(pid)
    return pids


def _kill_a_chunk_mid_run(head_pid: int, run, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first worker seen training a chunk.

    The first chunks are the safest targets: a fresh worker's first task starts by
    importing tailscope and torch, so it runs for a second or more, while on a loaded
    machine waiting for a later chunk could find every chunk already done (seen once in
    six suite runs)."""
    while not stop.is_set():
        for pid in _running_chunk_pids(head_pid):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.01)


def _train_while_killing(run, head, **options) -> tuple[list[int], TailscopeError | None]:
    """Train ``run`` on the cluster while a thread kills one busy worker; returns the killed
    pids and the error ``train`` raised, if any."""
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_chunk_mid_run, args=(head.pid, run, killed, stop))
    killer.start()
    error = None
    try:
        run.train(executor="ray", address=head.address, progress=False, **options)
    except TailscopeError as err:
        error = err
    finally:
        stop.set()
        killer.join()
    return killed, error


# ---- without a cluster -----------------------------------------------------------------------
def test_importing_tailscope_does_not_import_ray():
    code = "import sys, tailscope, tailscope.execute; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(DataError, match=r"pip install 'tailscope\[ray\]'"):
        get_executor("ray", address="127.0.0.1:6379")


@needs_ray
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("num_cpus_per_task", 0),
        ("max_in_flight", 0),
        ("max_retries", -1),
        ("num_gpus_per_task", -1),
        ("address", ""),
    ],
)
def test_options_are_validated_by_name(option, value):
    with pytest.raises(DataError, match=option):
        get_executor("ray", **{option: value})


@needs_ray
def test_unreachable_head_fails_fast_with_one_line(tmp_path, digits):
    run = _new_run(tmp_path / "r", digits)
    start = time.monotonic()
    with pytest.raises(TailscopeError, match="no Ray cluster answers at 127.0.0.1:") as info:
        run.train(executor="ray", address=f"127.0.0.1:{free_port()}", progress=False)
    assert time.monotonic() - start < 30
    assert "\n" not in str(info.value)
    assert run.n_finished == 0


@needs_ray
def test_rows_depend_on_the_task_thread_count_only_through_rounding(digits):
    from tailscope.execute.ray import _train_chunk

    plan = ts.SubsetPlan.random(2, digits.n_train, ratio=0.7, random_state=0)
    x_train, x_test = features(digits)
    job = ts.execute.TrainingJob(
        replace(RECIPE, epochs=10),
        x_train,
        digits.y_train,
        x_test,
        digits.y_test,
        digits.n_classes,
        plan.masks,
        plan.seeds,
    )
    with _torch_threads(torch.get_num_threads()):  # the task sets it; restore it after
        one, two = (_train_chunk(job, np.arange(2), threads) for threads in (1, 2))
    # Other thread counts split products differently: the same models up to round-off.
    steps = 10 * math.ceil(int(plan.masks[0].sum()) / RECIPE.batch_size)
    assert_same_up_to_rounding(one, two, "fp32", steps)


# ---- on the loopback cluster -------------------------------------------------------------------
@needs_ray
def test_cluster_run_equals_local_run_with_bounded_chunks_in_flight(
    ray_head, local_run, tmp_path, digits
):
    import ray

    waited_on: list[int] = []
    real_wait = ray.wait

    def counting_wait(refs, *args, **kwargs):
        waited_on.append(len(refs))
        return real_wait(refs, *args, **kwargs)

    run = _new_run(tmp_path / "r", digits)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray, "wait", counting_wait)
        run.train(executor="ray", address=ray_head.address, max_in_flight=2, progress=False)
    _assert_same_results(run, local_run)
    # Every chunk submitted and not yet written is among the refs waited on, one wait per
    # written chunk.
    assert max(waited_on) == 2
    assert len(waited_on) == SPEC["n_models"] // SPEC["models_per_step"]


def _counting(calls: dict[str, int], name: str, function):
    """``function``, counting its calls in ``calls[name]``."""

    def counted(*args, **kwargs):
        calls[name] += 1
        return function(*args, **kwargs)

    return counted


@needs_ray
def test_adaptive_rounds_share_one_connection_and_one_copy_of_the_job(
    ray_head, local_run, tmp_path, digits
):
    import ray

    from tailscope.execute.ray import RayExecutor

    calls = {"init": 0, "put": 0, "run": 0}
    run = _new_run(tmp_path / "r", digits)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray, "init", _counting(calls, "init", ray.init))
        mp.setattr(ray, "put", _counting(calls, "put", ray.put))
        mp.setattr(RayExecutor, "run", _counting(calls, "run", RayExecutor.run))
        # Never stops on the SE rule below min_models=32: every round of 2 chunks runs.
        run.train(
            executor="ray",
            address=ray_head.address,
            until_se=0.05,
            check_every=2 * SPEC["models_per_step"],
            progress=False,
        )
    rounds = SPEC["n_models"] // (2 * SPEC["models_per_step"])
    assert calls == {"init": 1, "put": 1, "run": rounds}
    assert not ray.is_initialized()  # the session ended the connection it made
    assert run.stopping["reason"] == "all_models"
    _assert_same_results(run, local_run)


@needs_ray
def test_a_session_connects_only_when_it_runs_something(monkeypatch):
    import ray

    def no_init(*args, **kwargs):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", no_init)
    executor = get_executor("ray", address=f"127.0.0.1:{free_port()}")
    with executor.session(job=object()):
        executor.run(object(), [], lambda models, rows: None)  # no chunks: nothing to do
    assert not ray.is_initialized()


@needs_ray
@needs_linux
def test_worker_killed_mid_run_is_retried_to_identical_results(
    ray_head, local_run, tmp_path, digits
):
    run = _new_run(tmp_path / "r", digits)
    killed, error = _train_while_killing(run, ray_head)
    assert error is None
    assert len(killed) == 1, "no chunk was running to kill"
    _assert_same_results(run, local_run)


@needs_ray
@needs_linux
def test_chunk_failing_every_retry_is_left_for_the_next_train(
    ray_head, local_run, tmp_path, digits
):
    run = _new_run(tmp_path / "r", digits)
    killed, error = _train_while_killing(run, ray_head, max_retries=0)
    assert len(killed) == 1, "no chunk was running to kill"
    assert error is not None
    assert "1 of " in str(error) and "train again" in str(error)
    # The driver went on: every other chunk is written, the failed one is not.
    assert run.n_finished == SPEC["n_models"] - SPEC["models_per_step"]
    assert len(run.chunks()) == 1
    with _torch_threads(1):
        run.train(progress=False)  # as any interrupted run: trains only the failed chunk
    _assert_same_results(run, local_run)


@needs_ray
def test_cli_names_an_unreachable_cluster_in_one_line(tmp_path, capsys):
    from tailscope.cli import main

    address = f"127.0.0.1:{free_port()}"
    argv = ["train", str(tmp_path / "r"), "--dataset", "digits", "--n-train", "200"]
    argv += ["--n-test", "60", "--models", "4", "--epochs", "1", "--models-per-step", "2"]
    assert main([*argv, "--quiet", "--executor", "ray", "--address", address]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"no Ray cluster answers at {address}" in err


def _build_defined_in_this_test_file(feature_shape, n_classes):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, n_classes))


@needs_ray
@pytest.mark.slow  # one more Ray job (~10 s of worker start-up)
def test_model_code_the_workers_cannot_import_is_named(ray_head, tmp_path, digits):
    recipe = ts.Recipe("local-code", _build_defined_in_this_test_file, 1, 32, 0.1)
    run = ts.Run.create(tmp_path / "r", digits, recipe, n_models=4, models_per_step=2)
    with pytest.raises(TailscopeError, match="Ray workers cannot import .*test_ray"):
        run.train(executor="ray", address=ray_head.address, progress=False)
    assert run.n_finished == 0


@needs_ray
@pytest.mark.slow
def test_without_address_a_private_local_ray_is_started_and_stopped(local_run, tmp_path, digits):
    import ray

    run = _new_run(tmp_path / "r", digits)
    run.train(executor="ray", init_options={"num_cpus": 2}, progress=False)
    assert not ray.is_initialized()
    _assert_same_results(run, local_run)
