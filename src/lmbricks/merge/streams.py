"""The I/O threads of a streaming merge: read ahead into the page cache, and write finished tensors.

* :class:`ReadAhead` pulls the bytes of upcoming input tensors into the page cache with large
  sequential ``pread`` calls, at most ``limit`` bytes ahead of the computation; tensors are then used
  as zero-copy views of the memory-mapped files, so input data never counts as anonymous memory.
* :class:`TensorWriter` writes finished tensors straight into place in pre-declared safetensors
  shards, at most ``limit`` bytes queued, flushing them to disk as it goes.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import torch

from lmbricks.checkpoint import ShardedWriter

_READ_CHUNK = 8 << 20


class ReadAhead(threading.Thread):
    """Reads the inputs of tensors ``0..n`` in order into the page cache, staying ``limit`` bytes ahead."""

    def __init__(self, ranges: list[list[tuple[Path, int, int]]], limit: int) -> None:
        super().__init__(name="lmbricks-readahead", daemon=True)
        self.ranges = ranges
        self.limit = limit
        self.cond = threading.Condition()
        self.done = 0  # tensors fully read
        self.consumed = 0  # tensors the computation has started
        self.stop = False
        self.error: BaseException | None = None
        self._sizes = [sum(e - s for _p, s, e in r) for r in ranges]

    def run(self) -> None:
        buf = bytearray(_READ_CHUNK)
        fds: dict[Path, int] = {}
        try:
            for i, rng in enumerate(self.ranges):
                with self.cond:
                    while not self.stop and i > self.consumed and sum(self._sizes[self.consumed : i]) > self.limit:
                        self.cond.wait()
                    if self.stop:
                        return
                for path, start, end in rng:  # ask for every input's range at once: deeper disk queue
                    fd = fds.get(path)
                    if fd is None:
                        fd = fds[path] = os.open(path, os.O_RDONLY)
                    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_WILLNEED)
                for path, start, end in rng:
                    fd = fds[path]
                    pos = start
                    while pos < end:
                        n = os.preadv(fd, [memoryview(buf)[: min(_READ_CHUNK, end - pos)]], pos)
                        if n <= 0:
                            break
                        pos += n
                with self.cond:
                    self.done = i + 1
                    self.cond.notify_all()
        except BaseException as exc:  # reported to the main thread
            with self.cond:
                self.error = exc
                self.done = len(self.ranges)
                self.cond.notify_all()
        finally:
            for fd in fds.values():
                os.close(fd)

    def wait_for(self, i: int) -> None:
        """Mark tensor ``i`` as started and block until its inputs are read (or the reader stopped)."""
        with self.cond:
            self.consumed = i
            self.cond.notify_all()
            while self.done <= i and not self.stop:
                self.cond.wait()

    def close(self) -> None:
        """Stop reading and wait for the thread."""
        with self.cond:
            self.stop = True
            self.cond.notify_all()
        self.join()


_FLUSH_EVERY = 256 << 20


def _flush_dir(directory: Path) -> None:
    """Push written shard bytes to disk now (overlapping the final fsync with the computation)."""
    for path in directory.glob("*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


class TensorWriter(threading.Thread):
    """Adds finished tensors to the :class:`ShardedWriter`; at most ``limit`` bytes queued.

    Every 256 MB it also flushes the shards to disk, so dirty pages never pile up and the fsync
    that makes the output durable at the end has little left to do.
    """

    def __init__(self, writer: ShardedWriter, limit: int) -> None:
        super().__init__(name="lmbricks-writer", daemon=True)
        self.writer = writer
        self.limit = limit
        self.q: queue.Queue[tuple[str, torch.Tensor] | None] = queue.Queue()
        self.cond = threading.Condition()
        self.queued = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        unflushed = 0
        while True:
            item = self.q.get()
            if item is None:
                return
            name, tensor = item
            try:
                if self.error is None:
                    self.writer.add(name, tensor)
                    unflushed += tensor.numel() * tensor.element_size()
                    if unflushed >= _FLUSH_EVERY:
                        _flush_dir(self.writer.directory)
                        unflushed = 0
            except BaseException as exc:
                self.error = exc
            with self.cond:
                self.queued -= tensor.numel() * tensor.element_size()
                self.cond.notify_all()
            del tensor, item

    def put(self, name: str, tensor: torch.Tensor) -> None:
        """Queue ``tensor`` for writing, waiting while the queue is over its limit; re-raises a write error."""
        n = tensor.numel() * tensor.element_size()
        with self.cond:
            while self.queued > 0 and self.queued + n > self.limit and self.error is None:
                self.cond.wait()
            self.queued += n
        if self.error is not None:
            raise self.error
        self.q.put((name, tensor))

    def close(self) -> None:
        """Write what is queued, stop the thread, and re-raise a write error."""
        self.q.put(None)
        self.join()
        if self.error is not None:
            raise self.error
