"""Continuous batching: one thread per loaded model owns the model and runs every request's decode step
together.

Each turn of the loop admits waiting requests into free KV slots (each new request's prefill is a step of
its own, which also samples its first token), then runs ONE batched decode step for every active sequence
(zoo.runtime.batch: the linear layers see all sequences' tokens as one [B, dim] matrix). A sequence leaves
when its answer ends, when its request cancels it (the client went away) or when the server halts, and its
slot is free for the next request at once. Requests beyond the slots wait their turn.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zoo.runtime.generate import Answer
from zoo.runtime.sampling import Sampler

if TYPE_CHECKING:
    from zoo.runtime.batch import KVSlot
    from zoo.runtime.model import Model
    from zoo.runtime.tokenizer import Tokenizer

    from .generation import Job

log = logging.getLogger("zoo.serve")

DONE = object()  # the last item a sequence emits (after its text pieces, or an exception)
_WORKQUEUE = threading.Lock()


def _kernels_exclusive():
    """A lock when numba runs on its workqueue threading layer, which aborts the process if two threads
    launch parallel kernels at once (two models' schedulers); nothing on omp or tbb."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = None
    return _WORKQUEUE if layer in (None, "workqueue") else contextlib.nullcontext()


@dataclass(eq=False)
class Sequence:
    """One request's sequence: its job, where its items go (`emit`, called from the scheduler thread),
    and its decoding state once admitted."""

    job: Job
    emit: Callable[[object], None]  # a text piece (str), then DONE or an exception
    cancelled: bool = False
    slot: KVSlot | None = None
    history: list[int] = field(default_factory=list)  # tokens whose K/V are in the slot
    token: int = -1  # the last sampled token, the next one to run
    sampler: Sampler | None = None
    answer: Answer | None = None
    decode_t0: float = 0.0


class Scheduler:
    """The decode loop of one loaded model, at most `max_batch` sequences at once."""

    def __init__(self, name: str, model: Model, tok: Tokenizer, max_batch: int, halt: threading.Event,
                 threads: int | None = None) -> None:
        from zoo.runtime.batch import BatchRunner

        self.name, self.tok, self.halt, self.threads = name, tok, halt, threads
        self.runner = BatchRunner(model, max_batch)
        self._waiting: deque[Sequence] = deque()
        self._active: list[Sequence] = []
        self._cond = threading.Condition()
        self._closed = False
        self.steps = 0  # batched decode steps run
        self.largest_batch = 0  # the most sequences one step has run
        self._thread = threading.Thread(target=self._loop, name=f"zoo-scheduler-{name}", daemon=True)

    def warm(self) -> None:
        """Compile or load every kernel a step uses (prefill, one-token and batched decode) before serving."""
        a, b = self.runner.acquire(), self.runner.acquire()
        try:
            self.runner.prefill([0, 0], 0, a)
            self.runner.decode([0], [2], [a])
            if b is not None:
                self.runner.decode([0, 0], [3, 0], [a, b])
        finally:
            for slot in (a, b):
                if slot is not None:
                    self.runner.release(slot)

    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def submit(self, job: Job, emit: Callable[[object], None]) -> Sequence:
        """Queue a job (already checked against the context); its items go to `emit` from the scheduler thread."""
        seq = Sequence(job, emit)
        with self._cond:
            self._waiting.append(seq)
            self._cond.notify()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Stop a sequence at the next step (its client went away); its slot is freed then."""
        with self._cond:
            seq.cancelled = True
            self._cond.notify()

    def close(self) -> None:
        """Let the sequences already submitted finish, then end the thread (the model was unloaded)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def stats(self) -> dict:
        """What /api/ps reports beside Ollama's fields: sequences running and waiting, steps, largest batch."""
        with self._cond:
            return {"running": len(self._active), "waiting": len(self._waiting), "max_batch": self.runner.max_batch,
                    "steps": self.steps, "largest_batch": self.largest_batch}

    # ---- the loop (scheduler thread) --------------------------------------------------------------
    def _loop(self) -> None:
        if self.threads:  # numba's thread count is per calling thread: --threads applies here too
            import numba

            numba.set_num_threads(self.threads)
        while True:
            try:
                if not self._turn():
                    return
            except Exception as err:  # a bug: the requests get a 500, the scheduler keeps serving
                log.error("%s: scheduler step failed", self.name, exc_info=err)
                for seq in list(self._active):
                    self._fail(seq, err)

    def _turn(self) -> bool:
        """Admit what fits, then one decode step; False once closed and drained."""
        with self._cond:
            while not (self._waiting or self._active or self._closed):
                self._cond.wait()
            if self._closed and not (self._waiting or self._active):
                return False
            admitted = []
            while self._waiting and self.runner.free_slots:
                seq = self._waiting.popleft()
                seq.slot = self.runner.acquire()
                admitted.append(seq)
        for seq in admitted:
            self._prefill(seq)
        self._drop_stopped()
        if self._active:
            self._step()
        return True

    def _prefill(self, seq: Sequence) -> None:
        """Admit a sequence: its prompt through the model on its slot, then its first token."""
        if seq.cancelled:
            return self._finish(seq, "interrupted", "request cancelled: the client went away")
        job = seq.job
        seq.sampler = Sampler(job.params)
        seq.answer = Answer(self.tok, job.max_tokens, job.stop, job.result)
        try:
            t0 = time.perf_counter()
            with _kernels_exclusive():
                logits = self.runner.prefill(job.prompt_ids, 0, seq.slot)
            seq.history = list(job.prompt_ids)
            job.result.prefill_s = time.perf_counter() - t0
            seq.decode_t0 = time.perf_counter()
            self._active.append(seq)
            self._take(seq, seq.sampler(logits, seq.history))
        except Exception as err:  # handed to the request, which answers with the API's error
            self._fail(seq, err)

    def _drop_stopped(self) -> None:
        """End the sequences whose request was cancelled, or all of them when the server halts."""
        for seq in list(self._active):
            if seq.cancelled:
                self._finish(seq, "interrupted", "request cancelled: the client went away")
            elif self.halt.is_set():
                self._finish(seq, "interrupted", "the server is stopping")

    def _step(self) -> None:
        """One decode step of every active sequence: one batched forward, then each samples its next token."""
        seqs = list(self._active)
        self.steps += 1
        self.largest_batch = max(self.largest_batch, len(seqs))
        try:
            with _kernels_exclusive():
                logits = self.runner.decode([s.token for s in seqs], [len(s.history) for s in seqs],
                                            [s.slot for s in seqs])  # [B, vocab]
        except Exception as err:
            for seq in seqs:
                self._fail(seq, err)
            return
        for b, seq in enumerate(seqs):
            seq.history.append(seq.token)
            try:
                self._take(seq, seq.sampler(logits[b], seq.history))
            except Exception as err:
                self._fail(seq, err)

    def _take(self, seq: Sequence, token: int) -> None:
        """A sequence's next token: hand out its text; the sequence leaves when its answer is complete."""
        piece = seq.answer.push(token)
        if piece:
            seq.emit(piece)
        if seq.answer.done:
            self._finish(seq)
        else:
            seq.token = token

    def _finish(self, seq: Sequence, reason: str | None = None, why: str | None = None) -> None:
        """A sequence leaves: timings, held-back text, its slot back, DONE to its request."""
        r = seq.job.result
        if reason is not None:
            r.finish_reason = reason
            log.info("%s: stopped after %d of %d tokens (%s)", self.name, r.generated_tokens, seq.job.max_tokens, why)
        if seq.answer is not None:
            r.decode_s = time.perf_counter() - seq.decode_t0
            piece = seq.answer.flush()
            if piece:
                seq.emit(piece)
        self._leave(seq)
        seq.emit(DONE)

    def _fail(self, seq: Sequence, err: BaseException) -> None:
        self._leave(seq)
        seq.emit(err)

    def _leave(self, seq: Sequence) -> None:
        if seq in self._active:
            self._active.remove(seq)
        if seq.slot is not None:
            self.runner.release(seq.slot)
            seq.slot = None
