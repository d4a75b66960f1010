"""The step machinery: one class step of one or many runs, from its
context and compiled train step (``build``, ``train_step``) through
fitting (``fit``, vmapped ``members``, ``compile_ahead``) to what its
directory keeps (``outputs``); ``class_step`` runs it. Generic: nothing
here names a method (``cil_jax.methods``)."""
