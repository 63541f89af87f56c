"""Foundations every other part uses: errors, organs, RLE, scale, metrics, params and the
on-disk layout of the pipeline's stages. Imports no torch."""
