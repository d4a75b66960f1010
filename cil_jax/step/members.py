"""Many runs in one program: a sweep's members trained side by side.

H student states are stacked along a new leading axis and the per-device
train step is ``jax.vmap``-ed over them inside the pmap, so one compiled
program trains every member of a sweep over the loss's scalar
hyperparameters (``eps``, ``kd_temperature``) and the members' starting
variables and teachers:

  step = ts.make_train_step(student.apply, teacher.apply, tx, ...)
  stacked = members.stack_states([ts.create_state(variables_i, tx, eps_i,
                                                  t_i) for ...])
  step_fn = ts.pmap_train_step(members.make_members_step(step), batch_fn)
  state, metrics = step_fn(parallel.replicate(stacked, devices), teacher,
                           resident, feed, jnp.stack(member_rngs))

The batch and the teacher are shared: every member sees the same examples,
as its run alone would, and the teacher's forward pass, which depends on no
member, is computed once per device rather than once per member. The rng is
per member (``[H, 2]`` keys, shared over devices like the plain step's), so
a member's dropout noise is its own run's: member ``i`` with key ``rngs[i]``
trains as the plain pmapped step with ``rngs[i]``, up to float rounding.
Metrics come back ``[devices, H]``.
"""

import functools

import jax
import numpy as np


def stack_states(states):
  """One state whose leaves carry the members along a new leading axis."""
  return jax.tree.map(lambda *leaves: np.stack(jax.device_get(leaves)),
                      *states)


def unstack_state(stacked, i):
  """Member ``i`` of a stacked (host, not replicated) state."""
  return jax.tree.map(lambda leaf: leaf[i], stacked)


@functools.lru_cache(maxsize=None)
def make_members_step(train_step, shared_teacher=True):
  """The per-device ``train_step`` over stacked states and per-member rngs.

  Same signature ``(state, teacher, batch, rng)``, so ``ts.pmap_train_step``
  wraps it as it wraps the plain step (members share the batch and its
  augmentation, which the data's ``batch_fn`` makes outside the vmap). With
  ``shared_teacher=False`` the teacher is stacked too, one per member (a
  later class step, where each member's teacher is its own previous model).
  Cached, so ``pmap_train_step`` of it is too.
  """
  return jax.vmap(train_step, in_axes=(0, None if shared_teacher else 0,
                                       None, 0))
