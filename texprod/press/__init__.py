"""Press: what makes pixels a print file: geometry (mm, dpi, bleed), colour (ICC), the TIFF
writers, the proof, the promise a file makes and preflight, which checks it; and the raw
canvas of `texprod render`.

It imports the engine's leaf types at most, never models, job or training.
"""
