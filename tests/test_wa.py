"""WA (Zhao et al. CVPR 2020), a method added as one module
(cil_jax/methods/wa.py): on real digits it keeps the old classes that
fine-tuning forgets, its head stays non-negative after every update, and
its new columns leave the step with the old ones' mean norm."""

import os

import numpy as np

from cil_jax import api
from cil_jax import train
from tests.helpers import small_config


def test_wa_keeps_old_classes_with_a_clipped_aligned_head(tmp_path):
  config = small_config(**{"methods": "wa,finetune", "train.epochs": 6,
                           "memory.size": 200})
  results = train.run(config, str(tmp_path))["methods"]
  wa, finetune = results["wa"], results["finetune"]
  assert wa["final_acc_old"] > finetune["final_acc_old"] + 0.5, (
      wa["final_acc_old"], finetune["final_acc_old"])
  assert wa["final_acc_new"] > 0.5
  _, variables, _ = api.load(os.path.join(str(tmp_path), "wa", "step_1",
                                          "classifier"))
  kernel = np.asarray(variables["params"]["head"]["kernel"])
  # Clipped after every update; weight aligning then scaled the new
  # columns by a positive factor, so the whole head is non-negative.
  assert kernel.min() >= 0.0
  norms = np.linalg.norm(kernel, axis=0)
  np.testing.assert_allclose(norms[5:].mean(), norms[:5].mean(), rtol=1e-4)
