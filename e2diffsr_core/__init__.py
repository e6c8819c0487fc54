"""E2DiffSR continuous-scale super-resolution."""
