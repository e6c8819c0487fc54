"""Tests of e2diffsr_core/model/, one module per component file."""
