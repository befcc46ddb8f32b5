"""Models: the generator checkpoint (model card + safetensors weights) on disk, and the
registry of named, versioned models on S3.

It imports the engine (to build and preview generators), `storage` (S3 transport and the
model cache) and nothing of press, job or training.
"""

from texprod.models.checkpoint import Checkpoint, load_checkpoint, load_generator, save_generator

__all__ = ["Checkpoint", "load_checkpoint", "load_generator", "save_generator"]
