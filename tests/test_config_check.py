"""``config_check.validate`` names the key, the problem and the choices.
(bfloat16 with a teacher module of one's own: ``test_byo_flax.py``.)"""

import pytest

from cil_jax import config_check
from tests.helpers import small_config


def test_unknown_dtype_names_the_key_and_the_choices():
  config = small_config(**{"train.dtype": "float16"})
  with pytest.raises(ValueError, match=r"config.train.dtype='float16'; use "
                     r"one of \('float32', 'bfloat16'\)"):
    config_check.validate(config, 1)
