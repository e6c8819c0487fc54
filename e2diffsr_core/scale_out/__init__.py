"""Running beyond one process: many rasters (``batch``, its resumable plan and records in ``plan``), one
raster split between processes at tile rows (``split``), and the torch.distributed ranks that share the work
(``distributed``). It builds on ``raster.superresolve_raster`` and raster I/O; the command line's parser
for `superresolve-batch` lives in ``cli``.
"""
