"""Whole-image feature maps kept by rows, and running normalisation statistics.

The streamed passes of the engine (stream) read and write feature maps one band of rows at a time.
A :class:`Canvas` holds one such map for the whole image: in memory when small, otherwise in a temporary
file written and read with plain positioned I/O (rows first, so that a band is one contiguous read), so the
process's resident memory stays bounded whatever the raster's area.
"""

from __future__ import annotations

import os
import tempfile

import torch

from ..errors import E2DiffSRError

CL = torch.channels_last


def read_into(fd: int, buf, offset: int) -> None:
    """Fill the writable buffer ``buf`` from the file at ``offset`` (positioned I/O: POSIX preadv straight into
    the buffer, no intermediate copy; a seek and reads where that is missing, e.g. on Windows)."""
    view = memoryview(buf).cast("B")
    got = 0
    while got < len(view):  # reads may come back short (large requests): go on from where one stopped
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[got:]], offset + got)
        else:
            os.lseek(fd, offset + got, os.SEEK_SET)
            part = os.read(fd, len(view) - got)
            view[got:got + len(part)] = part
            n = len(part)
        if n == 0:
            raise E2DiffSRError("a temporary feature file ended early (removed during the run?); run again")
        got += n


def write_at(fd: int, data, offset: int) -> None:
    """Write all of the buffer ``data`` at ``offset`` (POSIX pwrite, a seek and writes on Windows)."""
    view = memoryview(data).cast("B")
    while len(view):
        if hasattr(os, "pwrite"):
            done = os.pwrite(fd, view, offset)
        else:
            os.lseek(fd, offset, os.SEEK_SET)
            done = os.write(fd, view)
        view, offset = view[done:], offset + done


class Store:
    """Where a run's canvases live: memory while all of them together stay within ``ram_budget`` bytes, a
    temporary folder beyond, so that memory is bounded by the budget whatever the raster's area."""

    def __init__(self, device: torch.device, ram_budget: int, workdir: str | None = None,
                 dtype: torch.dtype = torch.float32):
        self.device, self.ram_budget, self.workdir, self.dtype = device, int(ram_budget), workdir, dtype
        self.in_memory = 0
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._count = 0

    def folder(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=".e2diffsr-features-", dir=self.workdir)
        return self._tmp.name

    def canvas(self, n: int, c: int, h: int, w: int, dtype: torch.dtype | None = None) -> Canvas:
        """A map of the store's dtype (``dtype`` overrides it, e.g. float32 for a small map that must stay exact)."""
        dtype = dtype or self.dtype
        size = n * c * h * w * dtype.itemsize
        if self.in_memory + size <= self.ram_budget:
            self.in_memory += size
            return Canvas(n, c, h, w, self.device, self, dtype)
        self._count += 1
        return FileCanvas(n, c, h, w, self.device, os.path.join(self.folder(), f"f{self._count}.bin"), dtype)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class Canvas:
    """A feature map [N, C, H, W] (float32, or bfloat16 in a bf16 run; channels last: the fast layout for
    convolutions on CPUs and GPUs) held in memory on the compute device. Values written are cast to its dtype."""

    def __init__(self, n: int, c: int, h: int, w: int, device: torch.device, store: Store | None = None,
                 dtype: torch.dtype = torch.float32):
        self.shape = (n, c, h, w)
        self.store, self.dtype = store, dtype
        self.data = torch.empty(self.shape, dtype=dtype, device=device, memory_format=CL)

    @property
    def height(self) -> int:
        return self.shape[2]

    def read(self, a: int, b: int) -> torch.Tensor:
        return self.data[:, :, a:b]

    def read_window(self, a: int, b: int, x0: int, x1: int) -> torch.Tensor:
        """Rows [a, b), columns [x0, x1): what a tile needs, whatever the map's width."""
        return self.data[:, :, a:b, x0:x1]

    def write(self, a: int, values: torch.Tensor) -> None:
        self.data[:, :, a:a + values.shape[2]] = values

    def add(self, a: int, values: torch.Tensor) -> None:
        self.data[:, :, a:a + values.shape[2]] += values

    def free(self) -> None:
        if self.data is not None and self.store is not None:
            self.store.in_memory -= self.data.numel() * self.dtype.itemsize
        self.data = None


class FileCanvas(Canvas):
    """The same map in a file, rows first ([H, N, W, C]); only the band being used is in memory."""

    def __init__(self, n: int, c: int, h: int, w: int, device: torch.device, path: str,
                 dtype: torch.dtype = torch.float32):
        self.shape = (n, c, h, w)
        self.device, self.dtype = device, dtype
        self.path = path
        self.row_bytes = n * c * w * dtype.itemsize
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
        try:
            if hasattr(os, "posix_fallocate"):  # reserve the space now rather than fail half-way
                os.posix_fallocate(self.fd, 0, self.row_bytes * h)
        except OSError as e:
            self.free()
            raise E2DiffSRError(f"no room for {self.row_bytes * h >> 20} MiB of temporary features in "
                                f"{os.path.dirname(path)} ({e.strerror}); free disk space") from None

    def read(self, a: int, b: int) -> torch.Tensor:
        n, c, _, w = self.shape
        buf = bytearray(self.row_bytes * (b - a))
        read_into(self.fd, buf, self.row_bytes * a)
        return self._to_device(torch.frombuffer(buf, dtype=self.dtype).view(b - a, n, w, c))

    def _to_device(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows [h, N, w, C] read from the file as the map's [N, C, h, w] on the compute device."""
        if self.device.type == "cuda":  # page-locked, so the copy to the card runs asynchronously
            rows = rows.pin_memory()
        return rows.permute(1, 3, 0, 2).to(self.device, non_blocking=True).contiguous(memory_format=CL)

    def read_window(self, a: int, b: int, x0: int, x1: int) -> torch.Tensor:
        """Only the columns asked for come off the disk (one read per row and batch element): a tile's memory
        and I/O do not grow with the raster's width."""
        n, c, _, w = self.shape
        if x0 <= 0 and x1 >= w:
            return self.read(a, b)
        seg, item = (x1 - x0) * c * self.dtype.itemsize, c * self.dtype.itemsize
        buf = bytearray(seg * n * (b - a))
        view = memoryview(buf)
        for i, row in enumerate(range(a, b)):
            for k in range(n):
                at = (i * n + k) * seg
                read_into(self.fd, view[at:at + seg], self.row_bytes * row + item * (k * w + x0))
        rows = torch.frombuffer(buf, dtype=self.dtype).view(b - a, n, x1 - x0, c)
        return self._to_device(rows)

    def write(self, a: int, values: torch.Tensor) -> None:
        rows = values.detach().to(self.dtype).permute(2, 0, 3, 1).contiguous().cpu()
        write_at(self.fd, rows.view(torch.uint8).numpy().data, self.row_bytes * a)

    def add(self, a: int, values: torch.Tensor) -> None:
        self.write(a, self.read(a, a + values.shape[2]) + values)

    def free(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            os.unlink(self.path)
            self.fd = None


class Moments:
    """Whole-image mean and variance per batch element and channel group, merged band by band (each band's
    own Welford statistics in float32, merged in float64: no cancellation whatever the image size)."""

    def __init__(self, groups: int):
        self.groups = groups
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor, a: int = 0) -> None:
        """Add a band (its first row ``a``: where it lies, for subclasses that count only some rows)."""
        n, c, h, w = x.shape
        # per channel, two passes over the band (centred: no cancellation) in float32 whatever the band's
        # dtype; on the channels-last view [N, H*W, C] both are plain column sums (several times
        # faster than var_mean over dims (2, 3) of a channels-last tensor)
        rows = x.detach().permute(0, 2, 3, 1).reshape(n, h * w, c).float()  # a bf16 band: one conversion
        mean = rows.sum(1) / (h * w)
        var = (rows - mean[:, None]).square_().mean(1)
        mean, var = mean.double().view(n, self.groups, -1), var.double().view(n, self.groups, -1)
        group_mean = mean.mean(-1)
        var = (var + (mean - group_mean[..., None]) ** 2).mean(-1)  # channels of a group: equal counts
        k = h * w * (c // self.groups)
        mean, m2 = group_mean, var * k
        if self.mean is None:
            self.count, self.mean, self.m2 = k, mean, m2
            return
        total = self.count + k
        delta = mean - self.mean
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * k / total)
        self.count = total

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and population variance [N, groups] in float64."""
        return self.mean, self.m2 / self.count
