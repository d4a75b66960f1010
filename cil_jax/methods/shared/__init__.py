"""Terms several methods share: tempered KD on the batch (``kd``), exemplar
memory rows beside the batch (``rows``), quadratic penalties towards the
previous model (``penalties``)."""
