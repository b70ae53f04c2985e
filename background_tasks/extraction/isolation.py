"""Run a parser in a process of its own so a hang, a crash or a memory blow-up costs one file, not the worker.

A thread's first isolated job forks a parser process, which then serves that
thread's jobs one at a time over a pipe: the function is sent by name with its
arguments, the answer comes back as JSON. Modules a job imports stay loaded
for the next one, and no job pays for a fork (6 ms for a process with the
parsers loaded; a script that had not imported them used to pay the import in
every child, 0.2-0.5 s per PDF, DOCX, XLSX or MSG file). Where ``fork`` does not
exist (Windows) the function runs in-process and Celery's time limits apply.

The isolation is that of a child per file. The parser process has the same
memory cap and a CPU-time limit set for each job; whenever a job is not
answered within its deadline, the process died, or ``run_isolated`` is left
without an answer for any other reason (Celery's ``SoftTimeLimitExceeded``),
the process is killed with its process group (programs it started) and
reaped, and the next job gets a new one. A death by signal is
``ExtractorCrashed``. On Linux it also gets SIGKILL the moment the thread
that started it dies (hard time limit, ``kill -9`` of the pool process);
everywhere it leaves when its parent closes the pipe, and the CPU-time limit
ends one whose parent is gone and which keeps computing. A job that raised
anything but MIDAS's own errors (a parser bug, MemoryError, RecursionError)
retires its process after answering, as do ``MAX_JOBS`` jobs, growth by
``GROWTH_LIMIT`` and ``IDLE_EXIT_S`` without a job: a parser's leftovers never
last long.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import pickle
import select
import signal
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from background_tasks import errors
from background_tasks.errors import ExtractionError, ExtractionTimeout, ExtractorCrashed, MidasError

log = logging.getLogger(__name__)

#: Address-space cap for a parser process; a decompression or allocation bomb hits it and fails that file only.
CHILD_MEMORY_LIMIT = 6 * 1024 * 1024 * 1024
#: CPU seconds a job may use per second of its deadline (parsers may run a few threads), plus a margin:
#: a backstop that ends a parser process whose parent vanished without taking it along (no PR_SET_PDEATHSIG).
CHILD_CPU_FACTOR, CHILD_CPU_MARGIN_S = 4, 10
#: A parser process retires after this many jobs, after growing this much, or after this long without a job.
MAX_JOBS = 500
GROWTH_LIMIT = 128 * 1024 * 1024
#: A job whose answer is larger retires its process too: its heap is as large as its document, and the
#: caller reads the answer only once the process is gone, so the two never hold a large text at once.
BIG_ANSWER = 16 * 1024 * 1024
IDLE_EXIT_S = 300.0
_PR_SET_PDEATHSIG = 1
#: A request is its length (8 bytes) and the pickled job. The answer is ``_STARTED`` once the job is
#: taken, then its JSON in UTF-8 (which never holds a NUL byte: JSON escapes control characters), then
#: ``_END`` and one byte saying whether the process retires. It is written and read in slices, so
#: neither side holds more copies of a document's text than a result file needed.
_STARTED, _END = b"S", b"\x00"
_LENGTH = 8
_SLICE = 1 << 20


def error_from_payload(payload: list[str]) -> MidasError:
    """Rebuild the error a parser process reported, by class name within our hierarchy."""
    name, message = payload
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, MidasError)):
        cls = ExtractionError
    return cls(message)


def _payload_for(exc: BaseException) -> list[str]:
    if isinstance(exc, MidasError):
        return [type(exc).__name__, exc.message]
    if isinstance(exc, MemoryError):
        return ["ResourceLimitExceeded", "the document needs more memory than allowed (decompression bomb?)"]
    if isinstance(exc, RecursionError):
        return ["ResourceLimitExceeded", "the document is nested too deeply"]
    return ["ExtractionError", f"parser error ({type(exc).__name__}: {exc})"]


def _run_in_process(func: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> dict[str, Any]:
    try:
        return func(*args)
    except MidasError:
        raise
    except Exception as exc:  # a parser's own exception type: report it in our terms
        raise error_from_payload(_payload_for(exc)) from exc


# -- in the parser process ---------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Lead a process group of its own and get SIGKILL when the parent's thread dies (Linux)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe's end and the CPU limit remain
        pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(4)


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_LIMIT, CHILD_MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass


def _let_go_of_sockets(keep: set[int]) -> None:
    """Put /dev/null in the place of every inherited socket (same descriptor number).

    A long-lived copy of the parent's connections would keep them open after the parent closed
    them (a listening port stays taken, a peer never sees the end); the numbers stay taken, so an
    inherited object that closes its descriptor some day closes nothing of ours.
    """
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    try:
        fds = [int(name) for name in os.listdir(folder)]
    except (OSError, ValueError):
        return
    null = -1
    try:
        for fd in fds:
            if fd <= 2 or fd in keep:
                continue
            try:
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    continue
                if null < 0:
                    null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, fd, inheritable=False)
            except OSError:  # the listing's own descriptor, gone by now
                continue
    finally:
        if null >= 0:
            os.close(null)


def _limit_cpu(timeout: float) -> None:
    """This job's CPU budget on top of what the process used so far (the soft limit; SIGXCPU ends it)."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime + timeout * CHILD_CPU_FACTOR + CHILD_CPU_MARGIN_S) + 1
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):
        pass


def _resident() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _grown(base: int | None) -> bool:
    """Whether the process holds ``GROWTH_LIMIT`` more than when it started, after handing freed heap back."""
    now = _resident()
    if base is None or now is None:
        return False
    if now - base > GROWTH_LIMIT // 4:
        try:
            ctypes.CDLL(None).malloc_trim(0)  # glibc keeps freed pages otherwise
        except (OSError, AttributeError):
            pass
        now = _resident() or now
    return now - base > GROWTH_LIMIT


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts, missing = [], size
    while missing:
        part = os.read(fd, missing)
        if not part:
            return None
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def _answer(job: Any) -> tuple[str, bool]:
    """Run one job (pickled, or as inherited); its JSON answer, and whether the process should retire after it."""
    retire = False
    try:
        func, args, timeout = pickle.loads(job) if isinstance(job, bytes) else job
        _limit_cpu(timeout)
        result: dict[str, Any] = {"ok": func(*args)}
    except MidasError as exc:
        result = {"error": _payload_for(exc)}
    except BaseException as exc:  # a parser bug, a memory or recursion blow-up: this process has seen enough
        result = {"error": _payload_for(exc)}
        retire = True
    try:
        return json.dumps(result, default=str, ensure_ascii=False), retire
    except (TypeError, ValueError) as exc:
        error = ["ExtractionError", f"the parser's result cannot be stored ({type(exc).__name__}: {exc})"]
        return json.dumps({"error": error}), True


def _serve(requests: int, replies: int, parent_pid: int, signal_mask: set[signal.Signals], first: Any) -> None:
    """The parser process: jobs in, answers out, until it retires, idles out or its parent goes."""
    status = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
        _die_with_parent(parent_pid)
        _let_go_of_sockets({requests, replies})
        _limit_memory()
        gc.freeze()  # what the parent left (its connections, sockets) is never collected, so never closed, here
        base, jobs = _resident(), 0
        while True:
            if first is not None:
                job, first = first, None
            else:
                ready, _, _ = select.select([requests], [], [], IDLE_EXIT_S)
                header = _read_exactly(requests, _LENGTH) if ready else None
                frame = _read_exactly(requests, int.from_bytes(header, "big")) if header else None
                if frame is None:
                    break  # idle too long, or the parent closed the pipe
                job = frame
            _write_all(replies, _STARTED)
            body, retire = _answer(job)
            del job
            for start in range(0, len(body), _SLICE):
                _write_all(replies, body[start : start + _SLICE].encode("utf-8", "surrogatepass"))
            retire = retire or len(body) > BIG_ANSWER
            del body
            jobs += 1
            retire = retire or jobs >= MAX_JOBS or _grown(base)
            _write_all(replies, _END + bytes([retire]))
            if retire:
                break
    except BaseException:
        status = 3
    finally:
        os._exit(status)


# -- in the caller -----------------------------------------------------------------


class _NotStarted(Exception):
    """The parser process was gone before it took the job: safe to hand it to a new one."""


class ParserProcess:
    """The caller's end of one parser process: its pid (while not reaped), pipes and pidfd."""

    def __init__(self, pid: int, requests: int, replies: int) -> None:
        self.pid, self.requests, self.replies = pid, requests, replies
        self.owner = os.getpid()
        self.reaped = False
        self.pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(pid)
            except OSError:
                self.pidfd = None

    @classmethod
    def start(cls, first: Any = None) -> ParserProcess:
        """Fork a parser process (``first``: a job it runs before reading any, inherited in memory)."""
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        parent_pid = os.getpid()
        # Signals wait until the process is known: a soft time limit arriving mid-fork cannot orphan it.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the parser process
                os.close(requests_write)
                os.close(replies_read)
                _serve(requests_read, replies_write, parent_pid, mask, first)
            os.close(requests_read)
            os.close(replies_write)
            try:
                os.setpgid(pid, pid)  # also here, so the group exists before the process gets to it
            except OSError:
                pass
            process = cls(pid, requests_write, replies_read)
            _local.process = process
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return process

    def call(self, request: bytes | None, timeout: float, label: str) -> _Reply:
        """Send a job (None: the one it was started with) and wait until its whole answer has arrived."""
        deadline = time.monotonic() + timeout
        if request is not None:
            try:
                _write_all(self.requests, len(request).to_bytes(_LENGTH, "big") + request)
            except BrokenPipeError:
                self._died(False, label)
        reply = _Reply()
        while True:
            if reply.retire is not None:
                return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExtractionTimeout(
                    f"{label}: the parser did not finish within {timeout:g} s (MIDAS_EXTRACT_TIMEOUT)"
                )
            watched = [self.replies] if self.pidfd is None else [self.replies, self.pidfd]
            ready, _, _ = select.select(watched, [], [], min(remaining, 0.05) if self.pidfd is None else remaining)
            chunk = os.read(self.replies, _SLICE) if self.replies in ready else None
            if chunk:
                reply.feed(chunk)
            elif chunk == b"" or self._exited(ready):
                reply.feed(self._drain())
                if reply.retire is not None:
                    return reply
                self._died(reply.started, label)

    def _exited(self, ready: list[int]) -> bool:
        if self.pidfd is not None:
            return self.pidfd in ready
        return _wait_status(self.pid, block=False) is not None

    def _drain(self) -> bytes:
        """What the process wrote before it exited."""
        os.set_blocking(self.replies, False)
        parts = []
        try:
            while part := os.read(self.replies, 1 << 20):
                parts.append(part)
        except BlockingIOError:
            pass
        return b"".join(parts)

    def _died(self, started: bool, label: str) -> None:
        """The process is gone without an answer: reap it and say why (``_NotStarted`` if it never took the job)."""
        status = _wait_status(self.pid, block=False)
        if status is None:  # it closed its pipes but lives on: it cannot answer any more
            self.kill()
            status = signal.SIGKILL.value
        self.reaped = True
        self.close()
        if not started:
            raise _NotStarted
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                raise ExtractionTimeout(f"{label}: the parser used more CPU time than its limit allows")
            raise ExtractorCrashed(f"{label}: the parser process died ({signal.Signals(sig).name})")
        raise ExtractorCrashed(f"{label}: the parser process exited with status {os.WEXITSTATUS(status)}")

    def kill(self) -> None:
        """SIGKILL the process group (the process and whatever it started), reap the process, close the pipes.

        Only while the process is not reaped, so its pid (and group id) cannot belong to anyone else.
        """
        if not self.reaped and self.owner == os.getpid():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:  # no group (yet): at least the process itself
                pass
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_status(self.pid, block=True)
            self.reaped = True
        self.close()

    def close(self) -> None:
        for fd in (self.requests, self.replies, self.pidfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.requests = self.replies = -1
        self.pidfd = None
        if getattr(_local, "process", None) is self:
            _local.process = None


def _wait_status(pid: int, block: bool) -> int | None:
    try:
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:  # reaped by someone else: gone, cause unknown
        return 0
    return status if done else None


class _Reply:
    """An answer as it arrives: started, the JSON (in one growing buffer: a large one is mapped memory that
    goes back to the system as soon as it is freed), then the end and the retire flag."""

    def __init__(self) -> None:
        self.started = False
        self.data = bytearray()
        self.ended = False
        self.retire: bool | None = None

    def feed(self, chunk: bytes) -> None:
        if chunk and not self.started:
            self.started, chunk = True, chunk[1:]
        if not self.ended:
            end = chunk.find(_END)
            if end < 0:
                self.data += chunk
                return
            self.data += chunk[:end]
            self.ended, chunk = True, chunk[end + 1 :]
        if chunk and self.retire is None:
            self.retire = chunk[0] == 1

    def answer(self) -> dict[str, Any]:
        """The result: at most two copies of the text at a time (bytes and str, then str and the result)."""
        text = self.data.decode("utf-8", "surrogatepass")
        self.data = bytearray()
        result: dict[str, Any] = json.loads(text)
        return result


_local = threading.local()


def _current() -> ParserProcess | None:
    """This thread's parser process, if it has one (one inherited across a fork belongs to the parent)."""
    process: ParserProcess | None = getattr(_local, "process", None)
    if process is not None and process.owner != os.getpid():
        _local.process = process = None
    return process


def stop_parser_process() -> None:
    """End this thread's parser process now (it would otherwise idle out after ``IDLE_EXIT_S``)."""
    process = _current()
    if process is not None:
        process.kill()


def run_isolated(
    func: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
    timeout: float,
    label: str = "file",
    isolate: bool = True,
) -> dict[str, Any]:
    """``func(*args)`` in this thread's parser process with a deadline; returns its JSON-able dict.

    Raises the job's MidasError, ExtractionTimeout, or ExtractorCrashed. ``func`` is sent by name;
    one that has none (a local function) gets a parser process of its own, forked with the job.
    """
    if not isolate or not hasattr(os, "fork"):
        return _run_in_process(func, args)
    try:
        request: bytes | None = pickle.dumps((func, args, timeout))
    except (pickle.PicklingError, AttributeError, TypeError):
        request = None
    if request is None:
        stop_parser_process()  # the job goes to a process forked with it in memory, which then retires
    for attempt in range(2):
        process = _current() if request is not None else None
        try:
            if process is None:
                process = ParserProcess.start(None if request is not None else (func, args, timeout))
            reply = process.call(request, timeout, label)
        except _NotStarted:
            if attempt or request is None:
                raise ExtractorCrashed(f"{label}: the parser process ended before it took the file") from None
            continue  # it had idled out or was killed between jobs: a new one takes the job
        except BaseException as exc:
            if process is None and request is None:
                process = _current()  # forked with its job, the task ended before the process was known here
            if process is not None and not process.reaped:
                if not isinstance(exc, ExtractionTimeout):
                    name = type(exc).__name__
                    log.warning("%s: parser process %d killed, its task ended (%s)", label, process.pid, name)
                process.kill()
            raise
        if reply.retire or request is None:
            process.kill()  # before the answer is decoded: a big one is never in both processes at once
        result = reply.answer()
        break
    if "error" in result:
        raise error_from_payload(result["error"])
    return result["ok"]
