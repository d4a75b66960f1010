"""The classifier front door: a classifier as it crosses into cil_jax
(cil_jax checkpoints, Flax modules, Keras models, plain checkpoints),
its metadata and input spec, the checks that a widened copy computes what
the given one does, and ``python -m cil_jax.classifier.inspect``."""
