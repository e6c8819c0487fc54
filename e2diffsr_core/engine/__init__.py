"""The tiled inference engine: the model over a raster of any size, tile by tile, with whole-image results.

``tiled`` runs a plan (``TiledSR``, ``superresolve_array``); its phases live by role: ``plan`` (the frozen
``RunPlan`` and its callbacks ``RunIO``), ``device`` (precision, threads, memory budget, tile size),
``stream`` (whole-image layers in bands of rows), ``latent`` (noise field, latent windows, reverse chain),
``decode`` (LR-grid features, the CSUM of one output tile), ``tiles`` (output tiles: decode, correct,
hand over), ``canvas`` (whole-image maps in memory or files) and ``consistency`` (back-projection onto the
input). It imports the model, ``gridmap``, ``rules``, ``errors`` and ``api`` only: never raster I/O or a
front end.
"""

from .latent import NoiseField
from .plan import RunIO, RunPlan, tile_starts
from .tiled import BORDER, CompiledUNet, EngineResult, TiledSR, superresolve_array

__all__ = ["BORDER", "CompiledUNet", "EngineResult", "NoiseField", "RunIO", "RunPlan", "TiledSR", "superresolve_array",
           "tile_starts"]
