"""One dispatcher for every heavy phase: run a function over tasks, serially or on an executor.

`run` is what `match_sky` (and later the span and write phases) hands its tasks to:

* results come back in task order, whatever order the executor finishes them in;
* ``executor`` is any `concurrent.futures.Executor` (threads: the numba kernels release
  the GIL; processes; a dask.distributed ``Client.get_executor()``), or None to run in
  this thread;
* tasks may be a lazy iterable: with an executor each task is submitted as soon as it
  is made, so making the next task overlaps running the previous ones;
* ``progress=True`` shows a tqdm bar when tqdm is installed (the optional extra
  ``skyeq[progress]``) and otherwise a line per tenth of the work, logged at INFO, or
  printed to stderr when INFO messages of skyeq would not be shown; a callable is
  called as ``progress(done, total)`` after each task;
* the first failure is re-raised with the name of its task (a task's ``label``
  attribute: its image, group or pair), and the tasks not yet started are cancelled.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any, TypeVar

__all__ = ["run"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Progress = bool | Callable[[int, int], Any]


def run(
    fn: Callable[[T], R],
    tasks: Iterable[T],
    executor: Executor | None = None,
    progress: Progress = False,
    *,
    total: int | None = None,
    phase: str = "tasks",
) -> list[R]:
    """Run ``fn`` on every task; return the results in task order.

    Parameters
    ----------
    fn : callable
        The work of one task (picklable, for process pools and clusters).
    tasks : iterable
        The tasks, possibly made lazily. A task's ``label`` attribute, if any, names it
        in errors.
    executor : concurrent.futures.Executor, optional
        Where the tasks run; None (default) runs them here, one after the other.
    progress : bool or callable, optional
        False (default): nothing. True: a tqdm bar (without tqdm, a line per tenth of
        the work: logged at INFO, or on stderr when INFO is not shown). A
        callable: ``progress(done, total)`` after each task.
    total : int, optional
        Number of tasks, for the progress report (default: ``len(tasks)`` when known).
    phase : str, optional
        What the tasks do, for the progress report (e.g. ``"measuring"``).

    Returns
    -------
    list
        ``fn(task)`` for every task, in task order.

    Raises
    ------
    Exception
        The first exception of a task, of the same type where possible, its message
        led by the task's label; the tasks not yet started are cancelled.
    """
    if total is None and hasattr(tasks, "__len__"):
        total = len(tasks)  # type: ignore[arg-type]
    report = _reporter(progress, total, phase)
    results: list[R] = []
    try:
        if executor is None:
            for task in tasks:
                results.append(_call(fn, task))
                report(len(results))
            return results
        submitted: list[tuple[Any, T]] = []
        try:
            for task in tasks:
                submitted.append((executor.submit(fn, task), task))
            _wait_all(submitted, report)
            results = [future.result() for future, _ in submitted]
        except BaseException:
            for future, _ in submitted:
                future.cancel()
            raise
        return results
    finally:
        report(None)


def _wait_all(submitted: list[tuple[Any, Any]], report: Callable[[int | None], None]) -> None:
    """Wait for every future; raise the first failure (in task order) as soon as one fails.

    Waiting on the futures in task order would notice a failure only once the tasks
    before it were done, while the queued tasks kept starting.
    """
    order = {id(future): k for k, (future, _) in enumerate(submitted)}
    pending = {future for future, _ in submitted}
    done_count = 0
    while pending:
        done, pending = concurrent.futures.wait(
            pending, return_when=concurrent.futures.FIRST_EXCEPTION
        )
        failed = [f for f in done if not f.cancelled() and f.exception() is not None]
        if failed:
            first = min(failed, key=lambda f: order[id(f)])
            err = first.exception()
            task = submitted[order[id(first)]][1]
            if isinstance(err, Exception):
                raise _named(err, task) from err
            raise err
        for _ in done:  # one report per task, as in the serial loop
            done_count += 1
            report(done_count)


def _call(fn: Callable[[T], R], task: T) -> R:
    """Run one task here, naming it in its error."""
    try:
        return fn(task)
    except Exception as err:
        raise _named(err, task) from err


def _named(err: Exception, task: Any) -> Exception:
    """Return ``err`` with a message that names ``task`` (the same type where possible).

    An error that already names the task (`_names`) is returned as it is; an exception
    type whose constructor does not take one message gets a note.
    """
    label = getattr(task, "label", None)
    if not label or _names(str(err), label):
        return err
    try:
        named = type(err)(f"{label}: {err}")
    except Exception:
        err.add_note(f"while running {label}")
        return err
    return named


def _names(message: str, label: str) -> bool:
    """Tell whether ``message`` already names the task.

    It does when it starts with the label, says ``image <label>`` or ``images
    <label>``, or holds the label, unless the label is a bare number (image ``5`` is
    not named by "failed after 5 retries").
    """
    if message.startswith(label):
        return True
    if f"image {label}" in message or f"images {label}" in message:
        return True
    return not label.isdigit() and label in message


def _reporter(progress: Progress, total: int | None, phase: str) -> Callable[[int | None], None]:
    """Make the progress callback: ``report(done)`` after each task, ``report(None)`` at the end."""
    if callable(progress):
        return lambda done: None if done is None else progress(done, total or done)
    if not progress:
        return lambda done: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        step = max(1, (total or 10) // 10)
        shown = log.isEnabledFor(logging.INFO)  # else the lines go to stderr: asked for

        def log_lines(done: int | None) -> None:
            if done is not None and (done % step == 0 or done == total):
                line = f"{phase}: {done} of {total if total else '?'} done"
                if shown:
                    log.info("%s", line)
                else:
                    print(f"skyeq: {line}", file=sys.stderr, flush=True)

        return log_lines
    bar = tqdm(total=total, desc=phase, unit="task", leave=False)

    def update(done: int | None) -> None:
        if done is None:
            bar.close()
        else:
            bar.update(done - bar.n)

    return update
