"""Tiled inference: agreement with a whole-image pass whatever the tile, no seams, noise, cancel, OOM retry,
temporary files."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from e2diffsr_core.api import build_model
from e2diffsr_core.engine import NoiseField, TiledSR, superresolve_array
from e2diffsr_core.engine.latent import plan_axis
from e2diffsr_core.errors import Cancelled, E2DiffSRError


@pytest.fixture(scope="module")
def image(data_dir):
    rgb = np.asarray(Image.open(data_dir / "SOAP_031.png").convert("RGB"), np.float32) / 255
    return rgb[:88, :104].transpose(2, 0, 1).copy()


@pytest.fixture(scope="module")
def model():
    return build_model("tiny", seed=0)


def seam_score(img: np.ndarray, row_starts, col_starts) -> float:
    """Mean |difference| across tile-boundary rows/columns over the same across all rows/columns."""
    d_rows = np.abs(np.diff(img, axis=1)).mean(axis=(0, 2))
    d_cols = np.abs(np.diff(img, axis=2)).mean(axis=(0, 1))
    b_rows = [s - 1 for s in row_starts[1:]]
    b_cols = [s - 1 for s in col_starts[1:]]
    boundary = np.concatenate([d_rows[b_rows], d_cols[b_cols]]).mean()
    return float(boundary / np.concatenate([d_rows, d_cols]).mean())


def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_plan_covers_the_output_on_the_latent_grid():
    for size, tile, overlap in [(1000, 256, 32), (257, 256, 32), (90, 128, 16), (513, 96, 24)]:
        spans = plan_axis(size, tile, overlap)
        assert spans[0].start == 0 and spans[-1].stop == size
        for a, b in zip(spans, spans[1:]):
            assert b.start % 8 == 0 and b.comp_start % 8 == 0
            assert a.stop - b.start >= overlap  # neighbours overlap
            assert b.start >= a.start + overlap  # and only neighbours
        assert all(min(tile, size) <= s.comp_stop - s.comp_start < min(tile, size) + 8 for s in spans)


def whole_pass(model, image, scale, seed, temperature=1.0):
    """model.sample on the whole image with the engine's noise field."""
    from e2diffsr_core.model import Geometry

    h, w = image.shape[1:]
    out = (int(h * scale), int(w * scale))
    win = NoiseField(seed, model.cfg.timesteps, model.cfg.embed_dim).window(0, out[0] // 8, 0, out[1] // 8)
    noises = [torch.from_numpy(n)[None] for n in win]
    with torch.no_grad():
        sr = model.sample((torch.from_numpy(image)[None] - 0.5) / 0.5, Geometry.whole((h, w), out), noises=noises,
                          temperature=temperature)
    return (sr.clamp(-1, 1) * 0.5 + 0.5)[0].numpy()


@pytest.mark.parametrize("scale, temperature", [(2.0, 1.0), (3.4, 1.0), (4.0, 1.0), (3.4, 0.0), (4.0, 0.5)])
def test_tiles_give_the_whole_image_pass(model, image, scale, temperature):
    """Whole-image normalisation statistics and exact halos: the tile size does not change the result, at the
    authors' sampling (temperature 1) and at the tools' default (0) alike."""
    whole = whole_pass(model, image, scale, seed=3, temperature=temperature)
    # the model's own output, as the whole pass
    raw = dict(seed=3, precision="fp32", consistency=False, temperature=temperature)
    big, _, r1 = superresolve_array(model, image, scale, tile=2048, **raw)
    tiled, _, r2 = superresolve_array(model, image, scale, tile=64, **raw)
    assert r1.tiles == 1 and r2.tiles > 4
    assert whole.shape == tiled.shape == (3, int(88 * scale), int(104 * scale))
    assert psnr(whole, big) > 90 and psnr(whole, tiled) > 90  # measured: ~120 dB (float rounding only)
    assert seam_score(tiled, r2.row_starts, r2.col_starts) < 1.1
    # with the consistency correction (the default), each tile carries the halo its back-projection needs
    big_c, _, _ = superresolve_array(model, image, scale, tile=2048, seed=3, precision="fp32", temperature=temperature)
    tiled_c, _, r3 = superresolve_array(model, image, scale, tile=64, seed=3, precision="fp32",
                                        temperature=temperature)
    assert psnr(big_c, tiled_c) > 80 and psnr(big_c, big) < 60  # the correction changed the output
    assert seam_score(tiled_c, r3.row_starts, r3.col_starts) < 1.1


def test_same_seed_same_result_and_samples_give_std(model, image):
    img = image[:, :40, :40]
    a, _, _ = superresolve_array(model, img, 2.0, seed=1, tile=64, overlap=16, temperature=1)
    b, _, _ = superresolve_array(model, img, 2.0, seed=1, tile=64, overlap=16, temperature=1)
    c, _, _ = superresolve_array(model, img, 2.0, seed=2, tile=64, overlap=16, temperature=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # the default for one sample draws no noise: the seed changes nothing, and the output is not the sampled one
    d, _, _ = superresolve_array(model, img, 2.0, seed=1, tile=64)
    e, _, _ = superresolve_array(model, img, 2.0, seed=2, tile=64)
    assert np.array_equal(d, e) and not np.allclose(d, a, atol=1e-3)
    # several samples default to temperature 1: they differ, and their spread is the uncertainty
    mean, std, _ = superresolve_array(model, img, 2.0, seed=1, samples=3)
    assert std is not None and std.shape == mean.shape and (std >= 0).all() and std.max() > 0
    for bad, message in ((0, "several samples differ only with a temperature above 0"),
                         (1.5, "temperature must be from 0 (the most faithful) to 1"),
                         ("hot", "temperature must be a number from 0 to 1")):
        with pytest.raises(E2DiffSRError, match=re.escape(message)):
            superresolve_array(model, img, 2.0, samples=3 if bad == 0 else 1, temperature=bad)


def test_noise_depends_only_on_global_position():
    field = NoiseField(5, steps=4)
    big = field.window(0, 70, 0, 90)
    assert np.array_equal(big[:, :, 33:50, 20:71], NoiseField(5, 4).window(33, 50, 20, 71))
    assert abs(big.std() - 1) < 0.05


def test_progress_and_cancel(model, image):
    seen = []
    superresolve_array(model, image[:, :48, :48], 3.0, tile=64, overlap=16, progress=seen.append)
    assert seen[-1] == 1.0 and len(seen) > 2 and seen == sorted(seen)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        superresolve_array(model, image[:, :48, :48], 3.0, tile=64, overlap=16, cancel=cancel)


def test_out_of_memory_retries_with_smaller_tiles(model, image, monkeypatch):
    from e2diffsr_core.engine import tiles as eng

    engine = TiledSR(model, torch.device("cpu"), tile=256, consistency=False)  # tiles without halos
    real = eng.csum_tile

    def flaky(st, csum, feats, lr, origin, tile, *args):
        if max(tile[1] - tile[0], tile[3] - tile[2]) > 128:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(st, csum, feats, lr, origin, tile, *args)

    monkeypatch.setattr(eng, "csum_tile", flaky)
    out = np.zeros((3, 176, 208), np.float32)

    def write(x, y, m, v, s):
        out[:, y:y + m.shape[1], x:x + m.shape[2]] = m

    logs = []
    res = engine.run(lambda x, y, w, h: (image[:, y:y + h, x:x + w], np.ones((h, w), bool)), write, (88, 104),
                     2.0, log=logs.append)
    assert res.tile == 128 and any("out of memory" in m for m in logs)
    assert out.min() >= 0 and out.max() > 0


@pytest.mark.parametrize("lr_hw,out_hw", [((24, 20), (81, 68)), ((37, 41), (74, 82)), ((16, 30), (128, 240))])
def test_tile_resizes_equal_the_whole_image_resizes(lr_hw, out_hw):
    """A 'tile' covering the whole image samples where F.interpolate does, edges included (up to the float32
    precision of grid_sample's normalised coordinates: measured <= 8e-5 here on N(0, 1) data)."""
    from e2diffsr_core.model import Geometry

    whole = Geometry.whole(lr_hw, out_hw)
    tile = Geometry.tile(lr_hw, out_hw, (0, 0), lr_hw, (0, 0), out_hw)
    x = torch.randn(2, 5, *lr_hw)
    for mode in ("bicubic", "bilinear"):
        assert torch.allclose(whole.lr_to_out(x, mode), tile.lr_to_out(x, mode), atol=2e-4)
    for factor in (1, 2, 4, 8):
        level = torch.randn(2, 5, lr_hw[0] * factor, lr_hw[1] * factor)
        assert torch.allclose(whole.level_to_out(level, factor), tile.level_to_out(level, factor), atol=2e-4)
    lat = torch.randn(2, 5, out_hw[0] // 8, out_hw[1] // 8)
    assert torch.equal(whole.latent_to_lr(lat), tile.latent_to_lr(lat))
def _run_engine(engine, image, scale, **kw):
    C, h, w = image.shape
    out = np.zeros((C, int(h * scale), int(w * scale)), np.float32)

    def write(x, y, m, v, s):
        out[:, y:y + m.shape[1], x:x + m.shape[2]] = m

    res = engine.run(lambda x, y, ww, hh: (image[:, y:y + hh, x:x + ww], np.ones((hh, ww), bool)), write, (h, w),
                     scale, **kw)
    return out, res


def test_diffusion_windows_leave_no_seam(model, image):
    """Rasters larger than one diffusion window: windows are blended at every reverse step."""
    whole, _ = _run_engine(TiledSR(model, torch.device("cpu"), tile=1024), image, 4.0, seed=2)
    windowed, _ = _run_engine(TiledSR(model, torch.device("cpu"), tile=1024, diffusion_window=256), image, 4.0,
                              seed=2)
    starts = [s.start * 8 for s in plan_axis(whole.shape[1] // 8, 32, 8)[1:]]
    assert starts  # several windows along each axis

    def score(img):
        d = np.abs(np.diff(img, axis=1)).mean(axis=(0, 2))
        return d[[s - 1 for s in starts]].mean() / d.mean()

    assert score(windowed) < 1.1 * score(whole)
    assert psnr(whole, windowed) > 30


def test_diffusion_windows_in_one_batch_give_the_same_result(model, image):
    """Windows of one reverse step evaluated together (a GPU's batches) blend to the same pixels as one by one;
    windows of another shape (a last window a few cells wider) go in a batch of their own."""
    from e2diffsr_core.engine.device import windows_per_call
    from e2diffsr_core.engine.latent import latent_windows, window_batches

    one, _ = _run_engine(TiledSR(model, torch.device("cpu"), tile=1024, diffusion_window=128, window_batch=1,
                                 precision="fp32", border=0), image, 4.0, seed=2)
    calls = []
    engine = TiledSR(model, torch.device("cpu"), tile=1024, diffusion_window=128, window_batch=3, precision="fp32",
                     border=0)  # the latent of the image itself, whose windows are counted below
    real_step = engine._step
    engine._step = lambda z, *a: calls.append(z.shape[0]) or real_step(z, *a)
    batched, _ = _run_engine(engine, image, 4.0, seed=2)
    rows, cols = latent_windows(352 // 8, 128), latent_windows(416 // 8, 128)
    assert len(rows) * len(cols) > 3 * 4 and max(calls) == 3
    assert sum(calls) == len(rows) * len(cols) * model.cfg.timesteps  # every window of every step, once
    assert np.abs(one - batched).max() < 1e-5
    batches = window_batches(rows, cols, 3)
    assert sorted(w for b in batches for w in b) == [(i, j) for i in range(len(rows)) for j in range(len(cols))]
    for b in batches:
        shapes = {(rows[i].comp_stop - rows[i].comp_start, cols[j].comp_stop - cols[j].comp_start) for i, j in b}
        assert len(b) <= 3 and len(shapes) == 1
    assert [w for b in window_batches(rows, cols, 1) for w in b] == [(i, j) for i in range(len(rows))
                                                                     for j in range(len(cols))]
    assert windows_per_call(model, torch.device("cpu"), 256 * 256, 1) == 1  # a CPU gains nothing from batches


def test_a_gpu_evaluates_as_many_unet_windows_at_once_as_a_quarter_of_its_budget_holds(monkeypatch):
    """The GPU's window batches from its memory budget (checked without a GPU: the budget is stubbed): the
    paper-size UNet's 256 x 256 cell windows, 3 in 1.5 GiB; small windows at most 8; never fewer than 1."""
    from e2diffsr_core.engine import device as engine_device
    from e2diffsr_core.engine.device import unet_bytes_per_cell, windows_per_call

    paper, cuda = build_model("paper"), torch.device("cuda")
    per_window = unet_bytes_per_cell(paper) * 256 * 256
    assert 4.5 * 2**10 * 256 * 256 < per_window < 8 * 2**10 * 256 * 256  # measured: 4.7-5.8 KiB a cell
    monkeypatch.setattr(engine_device, "_cuda_budget", lambda device: 6 * 2**30)
    assert windows_per_call(paper, cuda, 256 * 256, 1) == int(1.5 * 2**30 // per_window) == 3
    assert windows_per_call(paper, cuda, 32 * 32, 1) == 8
    assert windows_per_call(paper, cuda, 256 * 256, 8) == 1  # 8 samples of one window already fill it
    monkeypatch.setattr(engine_device, "_cuda_budget", lambda device: 2**20)
    assert windows_per_call(paper, cuda, 256 * 256, 1) == 1


def test_a_unet_that_cannot_be_compiled_runs_as_it_is_and_says_so(model, image, monkeypatch):
    """--compile where torch.compile fails at the first call (no C++ compiler, an unsupported operator): the
    run goes on with the module itself, same pixels, and its log says why."""
    def broken_compile(module, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("InductorError: no working C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    plain, _ = _run_engine(TiledSR(model, torch.device("cpu"), tile=1024, precision="fp32"), image, 2.0, seed=1)
    logs = []
    engine = TiledSR(model, torch.device("cpu"), tile=1024, precision="fp32", compile=True)
    out, _ = _run_engine(engine, image, 2.0, seed=1, log=logs.append)
    assert np.array_equal(out, plain)
    assert any(line == "note: the UNet could not be compiled (RuntimeError: InductorError: no working C++ compiler "
               "found); it ran uncompiled" for line in logs), logs


def test_the_compiled_unet_gives_the_pixels_of_the_module(model, image):
    """--compile for real (torch.compile's C++ backend on the CPU; the same code path builds CUDA graphs on a
    GPU): the UNet runs as compiled graphs and the output agrees with the module's."""
    from torch._dynamo.utils import counters

    img = image[:, :48, :56]
    plain, _ = _run_engine(TiledSR(model, torch.device("cpu"), tile=1024, diffusion_window=256, precision="fp32"),
                           img, 4.0, seed=3)
    logs = []
    engine = TiledSR(model, torch.device("cpu"), tile=1024, diffusion_window=256, precision="fp32", compile=True)
    counters.clear()
    out, _ = _run_engine(engine, img, 4.0, seed=3, log=logs.append)
    assert engine.unet.failed is None, engine.unet.failed
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert not any("could not be compiled" in line for line in logs)
    assert psnr(plain, out) > 90


def test_large_latents_go_to_temporary_files_that_are_removed(model, image, tmp_path, monkeypatch):
    from e2diffsr_core.engine import tiled as eng

    made = []
    real_init = eng.LatentCanvas.__init__

    def small_limit(self, n, ch, lh, lw, workdir=None, limit=0):
        real_init(self, n, ch, lh, lw, workdir, limit=0)  # always on disk
        made.append(self._tmp.name)

    monkeypatch.setattr(eng.LatentCanvas, "__init__", small_limit)
    engine = TiledSR(model, torch.device("cpu"), tile=128, workdir=str(tmp_path))
    a, _ = _run_engine(engine, image[:, :48, :48], 2.0, seed=1)
    assert made and all(p.startswith(str(tmp_path)) for p in made)
    assert list(tmp_path.iterdir()) == []
    calls = []
    with pytest.raises(Cancelled):
        _run_engine(engine, image[:, :48, :48], 2.0, seed=1, cancel=lambda: calls.append(1) or len(calls) > 2)
    assert list(tmp_path.iterdir()) == []


def test_no_disk_space_for_latent_files_is_a_clear_error(model, image, tmp_path, monkeypatch):
    import errno
    import os as _os

    from e2diffsr_core.engine import tiled as eng
    from e2diffsr_core.errors import E2DiffSRError

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_os, "posix_fallocate", full, raising=False)
    with pytest.raises(E2DiffSRError, match="no room for .* temporary latents"):
        eng.LatentCanvas(1, 4, 64, 64, str(tmp_path), limit=0)
    assert list(tmp_path.iterdir()) == []


def test_feature_maps_on_disk_give_the_same_result_and_are_removed(model, image, tmp_path, monkeypatch):
    """Large rasters keep their whole-image feature maps in temporary files: same pixels, nothing left."""
    from e2diffsr_core.engine.canvas import Store

    img = image[:, :40, :48]
    in_memory, _ = _run_engine(TiledSR(model, torch.device("cpu"), tile=64, precision="fp32"), img, 3.0, seed=4)
    monkeypatch.setattr(TiledSR, "_store", lambda self, tile: Store(self.device, 0, self.workdir))
    engine = TiledSR(model, torch.device("cpu"), tile=64, precision="fp32", workdir=str(tmp_path))
    seen = []
    real_read = __import__("e2diffsr_core.engine.canvas", fromlist=["FileCanvas"]).FileCanvas.read

    def spy(self, a, b):
        seen.append(self.path)
        return real_read(self, a, b)

    monkeypatch.setattr("e2diffsr_core.engine.canvas.FileCanvas.read", spy)
    on_disk, _ = _run_engine(engine, img, 3.0, seed=4)
    assert seen and all(p.startswith(str(tmp_path)) for p in seen)
    assert np.array_equal(in_memory, on_disk)
    assert list(tmp_path.iterdir()) == []
    calls = []
    with pytest.raises(Cancelled):
        _run_engine(engine, img, 3.0, seed=4, cancel=lambda: calls.append(1) or len(calls) > 20)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("posix_io", [True, False], ids=["pread", "seek-and-read"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_feature_files_read_a_tile_s_columns_only(tmp_path, monkeypatch, posix_io, dtype):
    """A tile reads only its own columns of an on-disk map (memory and I/O do not grow with the raster's
    width), with the same values as the map in memory; without POSIX positioned I/O (Windows) the same."""
    import os as _os

    from e2diffsr_core.engine.canvas import Canvas, FileCanvas

    if not posix_io:
        monkeypatch.delattr(_os, "preadv", raising=False)
        monkeypatch.delattr(_os, "pwrite", raising=False)
    values = torch.randn(2, 5, 30, 41).to(dtype)
    mem = Canvas(2, 5, 30, 41, torch.device("cpu"), dtype=dtype)
    disk = FileCanvas(2, 5, 30, 41, torch.device("cpu"), str(tmp_path / "f.bin"), dtype)
    for a in range(0, 30, 7):
        mem.write(a, values[:, :, a:a + 7])
        disk.write(a, values[:, :, a:a + 7])
    disk.add(3, torch.ones(2, 5, 4, 41, dtype=dtype))
    mem.add(3, torch.ones(2, 5, 4, 41, dtype=dtype))
    for a, b, x0, x1 in ((0, 30, 0, 41), (4, 11, 9, 20), (29, 30, 40, 41), (0, 1, 0, 1)):
        got = disk.read_window(a, b, x0, x1)
        assert got.shape == (2, 5, b - a, x1 - x0) and got.dtype == dtype
        assert torch.equal(got, mem.read_window(a, b, x0, x1))
    assert torch.equal(disk.read(0, 30), mem.read(0, 30))
    assert _os.path.getsize(tmp_path / "f.bin") == 2 * 5 * 30 * 41 * dtype.itemsize
    disk.free()
    assert list(tmp_path.iterdir()) == []


def test_a_raster_that_fits_in_memory_writes_no_feature_files(model, tmp_path, monkeypatch):
    """With the automatic tile, whole-image feature maps stay in memory while they fit the memory budget:
    a 640 x 640 px output (CondNet maps of 50 MiB, more than the old 16 MiB limit) writes no temporary files."""
    from e2diffsr_core.engine import canvas as engine_canvas

    made = []
    real_init = engine_canvas.FileCanvas.__init__
    monkeypatch.setattr(engine_canvas.FileCanvas, "__init__",
                        lambda self, *a, **k: made.append(a) or real_init(self, *a, **k))
    img = np.random.default_rng(0).random((3, 160, 160)).astype(np.float32)
    engine = TiledSR(model, torch.device("cpu"), precision="fp32", workdir=str(tmp_path), ram_budget=1 << 30,
                     consistency=False)
    _run_engine(engine, img, 4.0, seed=1)
    assert made == [] and list(tmp_path.iterdir()) == []


def test_no_disk_space_for_feature_files_is_a_clear_error(tmp_path, monkeypatch):
    import errno
    import os as _os

    from e2diffsr_core.engine.canvas import Store
    from e2diffsr_core.errors import E2DiffSRError

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_os, "posix_fallocate", full, raising=False)
    store = Store(torch.device("cpu"), 0, str(tmp_path))
    with pytest.raises(E2DiffSRError, match="no room for .* temporary features"):
        store.canvas(1, 32, 512, 512)
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_precision_policy_on_cpus_and_gpus(monkeypatch):
    from e2diffsr_core.engine.device import autocast_dtype

    cpu = torch.device("cpu")
    # auto follows the CPU alone (never a timing): bf16 with AMX, fp32 without
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert autocast_dtype(cpu, "auto") == torch.bfloat16
    assert autocast_dtype(cpu, "fp32") is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert autocast_dtype(cpu, "auto") is None
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16  # forced choices win
    assert autocast_dtype(torch.device("cuda"), "fp16") == torch.float16
    assert autocast_dtype(torch.device("cuda"), "fp32") is None


def test_auto_precision_on_the_cpu_is_reproducible(model, image):
    """The default precision is not chosen by a timing: the same seed gives the same pixels, run after run."""
    from e2diffsr_core.engine.device import cpu_has_amx

    a, _, _ = superresolve_array(model, image[:, :32, :32], 2.0, seed=4)
    b, _, _ = superresolve_array(model, image[:, :32, :32], 2.0, seed=4)
    c, _, _ = superresolve_array(model, image[:, :32, :32], 2.0, seed=4, precision="bf16" if cpu_has_amx() else "fp32")
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_bf16_on_the_cpu_agrees_with_fp32(model, image):
    a, _, _ = superresolve_array(model, image[:, :40, :40], 3.0, seed=2, precision="fp32")
    b, _, _ = superresolve_array(model, image[:, :40, :40], 3.0, seed=2, precision="bf16")
    assert psnr(a, b) > 35  # same noise, bf16 arithmetic: a close, not identical, image


def test_a_bf16_run_keeps_its_large_maps_in_bf16(model, image, monkeypatch):
    """bf16 runs hold the whole-image feature maps in bf16 (half the memory and memory traffic); the LR image,
    CondNet's latent and the prior maps (small, and amplified downstream) stay float32."""
    from e2diffsr_core.engine.canvas import Store

    made = []
    real = Store.canvas
    monkeypatch.setattr(Store, "canvas", lambda self, n, c, h, w, dtype=None: made.append(
        ((c, h, w), dtype or self.dtype)) or real(self, n, c, h, w, dtype))
    _run_engine(TiledSR(model, torch.device("cpu"), tile=64, precision="bf16", border=0), image[:, :40, :48], 3.0,
                seed=4)  # without a border, so that the maps have the image's own sizes
    out_grid = [d for (c, h, w), d in made if (h, w) == (120, 144)]
    assert out_grid and all(d == torch.bfloat16 for d in out_grid)  # CondNet's maps on the output grid
    assert made[0] == ((3, 40, 48), torch.float32)  # the LR image
    assert ((4, 15, 18), torch.float32) in made  # CondNet's latent
    made.clear()
    _run_engine(TiledSR(model, torch.device("cpu"), tile=64, precision="fp32", border=0), image[:, :40, :48], 3.0,
                seed=4)
    assert made and all(d == torch.float32 for _, d in made)


def test_group_norm_of_a_bf16_band_matches_float32():
    """The streamed GroupNorm on a bf16 band (batch norm with the whole-image statistics) computes in float32:
    it matches the float32 formula to bf16 rounding, even where the mean is far from zero."""
    from e2diffsr_core.engine.canvas import Moments
    from e2diffsr_core.engine.stream import group_norm

    torch.manual_seed(0)
    gn = torch.nn.GroupNorm(8, 32, eps=1e-6)
    torch.nn.init.normal_(gn.weight)
    torch.nn.init.normal_(gn.bias)
    x = (torch.randn(2, 32, 20, 30) * 0.5 + 40).contiguous(memory_format=torch.channels_last)
    m = Moments(8)
    m.add(x)
    ref = group_norm(x, gn, m.mean_var())
    exact = gn.double()(x.double())  # whole-image statistics of the whole band: GroupNorm itself
    assert torch.allclose(ref.double(), exact, atol=1e-4)
    xb = x.bfloat16()
    got = group_norm(xb, gn, m.mean_var())
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    want = group_norm(xb.float(), gn, m.mean_var())  # the same bf16 inputs in float32
    assert (got.float() - want).abs().max() <= 0.01 * want.abs().max()


_REUSE_CHECK = """
import resource, sys
import torch
from e2diffsr_core.engine.device import _glibc, reused_memory

if _glibc() is None:
    sys.exit(3)

def page_faults(n=8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(n):  # bands of slightly different sizes, as the engine's
        t = torch.ones((64 << 20) // 4 + 1000 * i)
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

pages = (64 << 20) // 4096
assert page_faults() > 6 * pages, "by default every 64 MiB block is fresh memory"
start = rss()
with reused_memory():
    assert page_faults() < 3 * pages, "reused: only the first block faults"
    assert rss() > start + (32 << 20), "and is kept while the run lasts"
assert rss() < start + (16 << 20), "returned afterwards"

def large_block():
    t = torch.ones((256 << 20) // 4)
    del t

# (page faults no longer tell the settings apart after a run: a hole the run left in the heap below a live
# block can serve a 64 MiB block again; a 256 MiB block is larger than any hole here)
large_block()
assert rss() < start + (16 << 20), "a large block freed later goes back at once, as by default"

first, second = reused_memory(), reused_memory()  # two runs that overlap (e.g. two QGIS tasks)
first.__enter__()
second.__enter__()
first.__exit__(None, None, None)
large_block()
assert rss() > start + (128 << 20), "the run still going keeps the blocks it frees"
second.__exit__(None, None, None)
assert rss() < start + (16 << 20), "returned when the last run ends"
large_block()
assert rss() < start + (16 << 20), "and the defaults are back"
print("ok")
"""


def test_runs_reuse_large_blocks_and_return_them_afterwards():
    """Within a run large blocks are reused from the heap (the kernel does not zero fresh pages for every band
    of every layer); after the last run of the process the allocator's defaults come back and the heap is
    trimmed, so that a host process such as QGIS gets the memory back. Checked in a fresh process: in this one,
    earlier tests leave holes in the heap that serve large blocks without faults whatever the setting."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _REUSE_CHECK], capture_output=True, text=True, timeout=300)
    if done.returncode == 3:
        pytest.skip("glibc only")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("scale", [2, 4])
def test_the_csum_s_upper_levels_from_the_level_on_the_output_grid_are_the_model_s(scale):
    """Where the CSUM's last level lies at four times the output grid (x2) the engine builds neither it nor
    the level between (one 5 x 5 conv on the output grid, with fewer taps on the raster's outermost rows and
    columns); at twice the output grid (x4) it builds no last level (one averaged conv). Bundled weights: both
    give the model's own levels, built and resized, on every tile: corners, edges, inside, one pixel wide."""
    import types

    import torch.nn.functional as F

    from e2diffsr_core.api import open_model
    from e2diffsr_core.engine import decode

    csum = open_model(None, "cpu").first_stage_model.decoder.upsampler
    st = types.SimpleNamespace(autocast=torch.no_grad, store=types.SimpleNamespace(dtype=torch.float32),
                               conv=lambda conv, x: conv(x))
    torch.manual_seed(0)
    h, w = 36, 44  # the level on the output grid (x2: level 1; x4: level 2), which is the output's size
    k = 1 if scale == 2 else 2
    level = torch.randn(1, csum.UPNet_x2_list[0][0].in_channels, h, w)
    with torch.no_grad():
        levels = [level]
        for up in csum.UPNet_x2_list[k:]:
            levels.append(up(levels[-1]))
        want = [F.interpolate(lv, size=(h, w), mode="bilinear", align_corners=False) for lv in levels[1:]]
        f = 2 ** k  # output pixels per LR pixel
        tiles = [(0, h, 0, w), (0, 7, 0, 9), (31, h, 40, w), (10, 22, 6, 30), (0, 1, 20, 21), (h - 1, h, 0, w)]
        # the default mapping, and a window of it whose output starts 1 and 2 LR pixels into the input
        # (a processing area's: its input window reaches beyond its output)
        for shift in [(0, 0), (1, 2)]:
            sy, sx = shift[0] * f, shift[1] * f
            for oy0, oy1, ox0, ox1 in tiles:
                tile = (max(0, oy0 - sy), oy1 - sy, max(0, ox0 - sx), ox1 - sx)  # in the window's output pixels
                if tile[1] <= tile[0] or tile[3] <= tile[2]:
                    continue
                ty0, ty1, tx0, tx1 = tile[0] + sy, tile[1] + sy, tile[2] + sx, tile[3] + sx  # on the level
                # the level's region a tile is given: what it reads, two output pixels of margin, in LR units
                region = ((max(0, (ty0 - 2) // f), min(h // f, -(-(ty1 + 2) // f))),
                          (max(0, (tx0 - 2) // f), min(w // f, -(-(tx1 + 2) // f))))
                (y0, y1), (x0, x1) = region
                crop = level[:, :, y0 * f:y1 * f, x0 * f:x1 * f]
                if scale == 2:
                    got = [decode._averaged_level(st, csum.UPNet_x2_list[-2], crop, region, tile, f, shift),
                           decode._composed_level(st, csum, crop, region, tile, f, shift, (h // f, w // f))]
                else:
                    got = [decode._averaged_level(st, csum.UPNet_x2_list[-1], crop, region, tile, f, shift)]
                for g, ref in zip(got, want[-len(got):]):
                    ref = ref[:, :, ty0:ty1, tx0:tx1]
                    assert g.shape == ref.shape
                    assert (g - ref).abs().max() < 1e-4 * ref.abs().max(), (shift, tile, (g - ref).abs().max())


def test_an_output_aligned_to_another_grid_gets_tiles_for_the_levels_it_builds():
    """At x2 the engine builds no CSUM level above the output grid, and its tiles are sized so; an output
    aligned to another grid (--align-to, processing areas) builds them all, at up to four times the output
    grid, and gets tiles sized for that (the same memory budget; measured on an 800 x 800 raster aligned at
    x2: peak RSS 5.2 GB with the default-mapped tile of 704 px, 2.1 GB with 256 px)."""
    from e2diffsr_core.api import open_model
    from e2diffsr_core.engine.device import auto_tile
    from e2diffsr_core.gridmap import AxisMap, GridMap

    model = open_model(None, "cpu")
    engine = TiledSR(model, torch.device("cpu"), ram_budget=8 << 30)
    half = AxisMap(100, 200, 0.5, -0.125)  # half the pixel size, shifted by a quarter of an input pixel
    aligned = engine.plan((100, 100), 2.0, out_size=(200, 200), grid=GridMap(half, half))
    plain = engine.plan((100, 100), 2.0)
    assert GridMap(half, half).aligned
    assert plain.tile == auto_tile(model, torch.device("cpu"), 2.0, ram_budget=8 << 30)
    assert aligned.tile == auto_tile(model, torch.device("cpu"), 2.0, ram_budget=8 << 30, shortcut=False)
    assert aligned.tile * 2 <= plain.tile


def test_a_window_of_the_default_mapping_keeps_the_shortcuts():
    """A processing area's engine grid is a window of the default mapping whose input reaches whole LR pixels
    beyond its output: the CSUM levels there are the output grid shifted by whole pixels, so the exact
    shortcuts (and their tiles) stay; a grid aligned to another raster (a fractional shift) has none."""
    from e2diffsr_core.engine.decode import exact_shift, shortcut_grid
    from e2diffsr_core.gridmap import AxisMap, GridMap

    whole = GridMap.sized((100, 120), (200, 240))
    window = GridMap(whole.y.window(40, 104, 14, 58), whole.x.window(0, 96, 0, 56))  # 6 and 0 LR px before
    assert window.aligned and exact_shift(window, 2) == (6, 0) and shortcut_grid(window)
    assert exact_shift(whole, 2) == (0, 0) and exact_shift(whole, 4) is None and shortcut_grid(None)
    quarter = AxisMap(100, 200, 0.5, 0.25)  # a quarter of an input pixel off
    assert exact_shift(GridMap(quarter, quarter), 2) is None and not shortcut_grid(GridMap(quarter, quarter))
    beyond = GridMap(AxisMap(20, 48, 0.5, 0.0), AxisMap(20, 40, 0.5, 0.0))  # output past the input's end
    assert exact_shift(beyond, 2) is None
