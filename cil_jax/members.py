"""Many runs in one program: a sweep's members trained side by side.

H student states are stacked along a new leading axis and the per-device
train step is ``jax.vmap``-ed over them inside the pmap, so one compiled
program trains every member of a sweep over the scalar hyperparameters
(``eps``, ``kd_temperature``, learning rate, init seed, rng seed):

  tx = members.with_learning_rate_scale(masked_tx)
  step = ts.make_train_step(student.apply, teacher.apply, tx, ...)
  stacked = members.stack_states([members.create_member_state(
      variables_i, tx, eps=eps_i, kd_temperature=t_i,
      learning_rate_scale=lr_i / base_lr) for ...])
  step_fn = ts.pmap_train_step(members.make_members_step(step))
  state, metrics = step_fn(ts.replicate(stacked, devices), teacher, batch,
                           jnp.stack(member_rngs))

The batch and the teacher are shared: every member sees the same examples,
as its run alone would, and the teacher's forward pass, which depends on no
member, is computed once per device rather than once per member. The rng is
per member (``[H, 2]`` keys, shared over devices like the plain step's), so
a member's dropout noise is its own run's: member ``i`` with key ``rngs[i]``
trains as the plain pmapped step with ``rngs[i]``, up to float rounding.
Metrics come back ``[devices, H]``.
"""

import jax
import jax.numpy as jnp
import optax

from cil_jax import train_step as ts

LEARNING_RATE_SCALE = "step_size"


def with_learning_rate_scale(tx):
  """``tx`` followed by a multiplier that lives in the optimizer state.

  The project's optimizers (SGD with momentum, Adam, AdamW, L2 or decoupled
  weight decay, any schedule, frozen-layer masks) all produce updates linear
  in the learning rate, so scaling the final updates by ``s`` trains exactly
  as the learning rate (and its whole schedule) times ``s``. Being a state
  value rather than a constant of ``tx``, the scale is stacked per member
  like any other leaf; ``optax.inject_hyperparams`` of the optimizer itself
  would not do, as a scheduled learning rate is recomputed from a closure.
  Frozen updates are zeros and stay zeros.
  """
  return optax.chain(tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def create_member_state(variables, tx, *, eps, kd_temperature,
                        learning_rate_scale=1.0):
  """``ts.create_state`` with this member's learning-rate scale.

  ``tx`` must come from ``with_learning_rate_scale``.
  """
  state = ts.create_state(variables, tx, eps, kd_temperature)
  opt_state = state.opt_state
  scale_state = (opt_state[-1] if isinstance(opt_state, tuple) and opt_state
                 else None)
  if not (isinstance(scale_state, optax.InjectStatefulHyperparamsState)
          and LEARNING_RATE_SCALE in scale_state.hyperparams):
    raise ValueError("A member's optimizer has no learning-rate scale; build "
                     "it as members.with_learning_rate_scale(tx).")
  scale_state = scale_state._replace(
      hyperparams={LEARNING_RATE_SCALE: jnp.float32(learning_rate_scale)})
  return state.replace(opt_state=(*opt_state[:-1], scale_state))


def stack_states(states):
  """One state whose leaves carry the members along a new leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack_state(stacked, i):
  """Member ``i`` of a stacked (host, not replicated) state."""
  return jax.tree.map(lambda leaf: leaf[i], stacked)


def make_members_step(train_step, shared_teacher=True):
  """The per-device ``train_step`` over stacked states and per-member rngs.

  Same signature ``(state, teacher, batch, rng)``, so ``ts.pmap_train_step``
  and both ``data.train_data`` placements wrap it as they wrap the plain
  step (members share the batch and its augmentation). With
  ``shared_teacher=False`` the teacher is stacked too, one per member (a
  later class step, where each member's teacher is its own previous model).
  """
  return jax.vmap(train_step, in_axes=(0, None if shared_teacher else 0,
                                       None, 0))
