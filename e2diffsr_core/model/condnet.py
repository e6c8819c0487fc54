"""CondNet (paper Sec. III-C): encodes bicubic(LR) straight into the scaled latent space."""

from .dpencoder import GAPEncoder


def CondNet(ch: int, ch_mult, num_res_blocks: int, z_channels: int = 4) -> GAPEncoder:
    """Same body as DPEncoder with a 3-channel input and a single (not doubled) latent output."""
    return GAPEncoder(3, ch, ch_mult, num_res_blocks, z_channels, double_z=False)
