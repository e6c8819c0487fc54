"""The algorithm's help text (the right-hand panel of its dialog)."""

from pathlib import Path

from .deps import LIB_DIR


def model_card_path() -> Path | None:
    """The bundled model card (the plugin's copy of the engine, or the source tree's)."""
    for root in (LIB_DIR, Path(__file__).resolve().parent.parent):
        card = root / "e2diffsr_core" / "weights" / "MODEL_CARD.md"
        if card.is_file():
            return card
    return None


HELP = """<p>Enlarges a raster by any factor above 1 (x2, x2.6, x3.4, x4 ... up to x16) with the E2DiffSR \
latent-diffusion super-resolution model. The output covers the same area in the same CRS with \
int(width &times; scale) &times; int(height &times; scale) pixels, the same bands, data type and NoData. \
The result is loaded as "<i>input name</i> x<i>scale</i>".</p>
<p><b>The bundled model is a small demonstration model</b> (trained for minutes on a few forest pictures; \
the model card lists its seven training pictures and which of them the current weights saw): it makes the \
plugin work out of the box and is sharper than bicubic, but for real work use a converted or retrained \
model in <b>Model file</b>. Its model card opens from <i>Raster &gt; E2DiffSR &gt; Model card</i> \
(MODEL_CARD.md beside the model).</p>
<p><b>Scale factor</b>: above 1, up to 16. The model was trained for 1 to 8; larger scales work but look softer \
(the log warns before the run).</p>
<p><b>Model file</b>: a model file (.pt); leave empty to use the bundled model.</p>
<p><b>Bands</b>: which bands to process, e.g. <code>1,2,3</code> (empty: all). They are processed in groups of \
three; a single band (panchromatic, DEM) is handled as grey.</p>
<p><b>Device</b>: <i>Automatic</i> uses a CUDA GPU when PyTorch sees one, else the CPU; or choose the CPU or one \
GPU (<i>cuda:1 &mdash; its name</i>). Scripts may write auto, cpu, cuda or cuda:N.</p>
<p><b>Sampling temperature</b>: how much of the diffusion's random noise the model draws, 0 to 1. \
Left empty, one sample uses 0, the most faithful result (closest to the truth on the validation \
pictures, still far sharper than bicubic), and several samples use 1, so that they differ. 1 is the \
authors' sampling: more invented detail.</p>
<p><b>Random seed</b>: the noise the model draws; the same seed gives the same result (at \
temperature 0 there is no noise, so the seed changes nothing).</p>
<p><b>Samples</b> and <b>Uncertainty</b>: with several samples the output is their mean, and the optional \
uncertainty raster holds their per-pixel standard deviation (where the model is unsure). It is loaded as \
"<i>input name</i> x<i>scale</i> uncertainty".</p>
<p><b>Target pixel size</b> (optional): the output's pixel size in the layer's CRS units (e.g. 0.04 for 4 cm \
pixels from a 10 cm layer) instead of a scale factor; the output covers the same extent in whole pixels of that \
size. The layer's pixels must be north-up and 1 to 16 times coarser.</p>
<p><b>Align to the grid of</b> (optional): a raster whose pixel grid the output snaps to, e.g. a finer \
orthophoto or a model grid to stack or compare with. The output takes that raster's pixel size and grid origin \
and covers the layer's whole extent (overshooting it by less than one output pixel on each side), so its pixels \
line up exactly with the reference's. The reference must be in the same CRS, north-up, with pixels 1 to 16 times \
finer than the layer's (down-sampling is GDAL's job: <i>Raster &gt; Projections &gt; Warp</i>). Leave <b>Target \
pixel size</b> empty when using it; with both empty, <b>Scale factor</b> is used. The result is loaded as \
"<i>input name</i> on the <i>reference name</i> grid".</p>
<p><b>Tile size</b>: output pixels per tile side; 0 picks one that fits the device's memory. Every tile is \
computed exactly as the whole image would be, so the tile size does not change the result and no seams appear.</p>
<p><b>Raw model output</b>: off by default, the result is corrected so that, reduced back to the input's pixels, \
it reproduces the input (more faithful, and closer to the truth on every test picture). Tick it for the model's \
own output. <b>Consistency map</b> (optional): how much each pixel was corrected, in the input's units: where the \
model's detail disagreed with the input.</p>
<p><b>Keep within the input's local range</b> (on by default): every output pixel stays between the lowest and \
highest of the 3 &times; 3 input pixels nearest to it, so flat areas stay flat, edges do not ring and no new \
peaks or pits appear, while texture within that range is kept. Untick it for the correction alone.</p>
<p><b>What the model is for</b>: imagery (aerial and satellite pictures), on which it was trained. An \
elevation model or another physical quantity is handled as a grey picture: with the defaults its flat areas, \
shores and range are kept (a lake in a DEM stays level to within 0.01 m at x4 in our tests), but slopes \
between input pixels are shaped by imagery, not terrain; for slope, hydrology or volumes use GDAL's \
interpolation. The model also sees the raster extended by reflection beyond its edges, so its border pixels \
are computed as inner ones are.</p>
<p><b>GeoTIFF creation options</b>: e.g. <code>COMPRESS=ZSTD;PREDICTOR=2</code> (separated by ; or |).</p>
<p><b>Processing extent</b> (optional): only this part of the layer (the layer's extent, the map canvas or an \
area drawn on it). <b>Only inside polygons</b> (optional): a polygon layer (or its selected features); pixels \
outside the polygons are NoData and tiles that touch none are not computed. The output keeps the whole layer's \
pixel grid, so pieces line up with each other and with a later whole run.</p>
<p><i>Raster &gt; E2DiffSR &gt; Super-resolve visible area</i> (also a toolbar button) previews the active \
raster layer where the map shows it, with the settings of the last run, into a temporary layer above it.</p>
<p>Before the run the log states the plan (output size, tiles, device) and an estimated time from the model's \
arithmetic and the pace of earlier runs on this device; the progress bar then shows the time left. \
Cancelling stops within a tile and leaves no output file. Requires PyTorch in the Python QGIS \
uses; if it is missing, <i>Raster &gt; E2DiffSR &gt; Set up PyTorch...</i> installs it.</p>"""
