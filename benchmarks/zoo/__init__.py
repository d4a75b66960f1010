"""Classifiers a user brings: each written and trained by plain code of its
own (flax, optax, orbax, Keras; no cil_jax), for the data-free benchmark
(``benchmarks/data_free_zoo.py``) and, small, for tests."""
