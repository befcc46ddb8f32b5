"""Training: the SGAN / PSGAN trainer and the texture-fidelity measure.

It imports the engine, models and `storage`; nothing of press or job.
"""
