"""Models: the model card (`card`, its one reader and writer), the generator checkpoint
(card + safetensors weights) on disk, the digest-keyed model cache, model references and
the registry of named, versioned models on S3.

It imports the engine (to build and preview generators), `storage` (S3 transport) and
nothing of press, job or training.
"""

from texprod.models.checkpoint import Checkpoint, load_checkpoint, load_generator, save_generator

__all__ = ["Checkpoint", "load_checkpoint", "load_generator", "save_generator"]
