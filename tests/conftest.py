"""Session setup: 8 fake CPU devices, set before anything imports jax."""

import os

_FLAGS = "--xla_force_host_platform_device_count=8"
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), _FLAGS) if f)
