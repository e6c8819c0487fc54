"""The paper's evaluation protocol: pictures and their reduction (``protocol``), the metrics (``metrics``:
PSNR, SSIM, LPIPS, FID, high-frequency ratio) and the evaluator (``evaluate``,
``python -m e2diffsr_core.evaluation``). It uses the model, the engine's consistency correction and the
shared rules; nothing below it imports it except the trainer's validation.
"""
