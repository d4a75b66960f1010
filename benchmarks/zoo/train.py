"""Trains a zoo classifier on some Fashion-MNIST classes with plain code
(optax Adam, a jitted step, orbax to save), as its user would:

  python -m benchmarks.zoo.train --model flax_cnn --classes 0,1,2,3,4,5,6,7 \
      --out DIR [--epochs 2] [--seed 0]

writes DIR/variables (a plain orbax checkpoint of {"params",
"batch_stats"}) and DIR/teacher.json (classes, test accuracy), or, for
``keras_cnn``, DIR/model.keras trained with ``model.fit``.
"""

import argparse
import json
import os

import numpy as np

from benchmarks.zoo import fashion


def _flax(model_name, classes, epochs, seed, out):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import optax
  import orbax.checkpoint as ocp
  from benchmarks.zoo import models

  module = models.FLAX[model_name](num_classes=len(classes))
  images, labels = _subset("train", classes)
  test_images, test_labels = _subset("test", classes)
  key = jax.random.PRNGKey(seed)
  variables = module.init(key, images[:2], train=False)
  params, stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state, x, y, key):
    def loss_fn(params):
      logits, updates = module.apply(
          {"params": params, "batch_stats": stats}, x, train=True,
          rngs={"dropout": key}, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y).mean(), updates.get("batch_stats", {})
    (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), stats, opt_state

  @jax.jit
  def predict(params, stats, x):
    return jnp.argmax(module.apply({"params": params, "batch_stats": stats},
                                   x, train=False), -1)

  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(labels))
    for i in range(0, len(order) - 127, 128):
      key, sub = jax.random.split(key)
      rows = order[i:i + 128]
      params, stats, opt_state = step(params, stats, opt_state,
                                      images[rows], labels[rows], sub)
  correct = sum(int((np.asarray(predict(params, stats, test_images[i:i + 1000]))
                     == test_labels[i:i + 1000]).sum())
                for i in range(0, len(test_labels), 1000))
  saved = {"params": params}
  if stats:
    saved["batch_stats"] = stats
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(os.path.join(out, "variables")),
                    jax.device_get(saved))
  checkpointer.wait_until_finished()
  return correct / len(test_labels)


def _keras(classes, epochs, seed, out):
  os.environ.setdefault("KERAS_BACKEND", "jax")
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((28, 28, 1)),
      keras.layers.Conv2D(16, 3, padding="same", name="conv1"),
      keras.layers.BatchNormalization(name="bn1"),
      keras.layers.ReLU(), keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(32, 3, padding="same", name="conv2"),
      keras.layers.BatchNormalization(name="bn2"),
      keras.layers.ReLU(), keras.layers.MaxPooling2D(),
      keras.layers.Flatten(),
      keras.layers.Dense(64, activation="relu", name="fc"),
      keras.layers.Dense(len(classes), name="logits")])
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True), metrics=["accuracy"])
  images, labels = _subset("train", classes)
  test_images, test_labels = _subset("test", classes)
  model.fit(images, labels, batch_size=128, epochs=epochs, verbose=0)
  _, accuracy = model.evaluate(test_images, test_labels, verbose=0)
  model.save(os.path.join(out, "model.keras"))
  return float(accuracy)


def _subset(split, classes):
  images, labels = fashion.load(split)
  keep = np.isin(labels, classes)
  position = {c: i for i, c in enumerate(classes)}
  return (fashion.normalised(images[keep]),
          np.asarray([position[y] for y in labels[keep]], np.int32))


def train(model_name, classes, out, epochs=2, seed=0):
  os.makedirs(out, exist_ok=True)
  if model_name == "keras_cnn":
    accuracy = _keras(classes, epochs, seed, out)
  else:
    accuracy = _flax(model_name, classes, epochs, seed, out)
  info = {"model": model_name, "classes": list(classes), "epochs": epochs,
          "seed": seed, "accuracy": accuracy}
  with open(os.path.join(out, "teacher.json"), "w") as f:
    json.dump(info, f)
  return info


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", required=True,
                      choices=["flax_cnn", "flax_resnet", "plain_mlp",
                               "keras_cnn"])
  parser.add_argument("--classes", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  print(json.dumps(train(args.model, [int(c) for c in args.classes.split(",")],
                         args.out, args.epochs, args.seed)))


if __name__ == "__main__":
  main()
