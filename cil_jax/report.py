"""Plain-text summaries of ``results.json``."""

from cil_jax import methods


def format_table(results):
  """Methods side by side: final old/new/all accuracy, average incremental
  accuracy and forgetting, then each method's accuracy matrix."""
  lines = [f"class sequence {results['class_sequence']} on "
           f"{results['dataset']}",
           f"{'method':<10} {'acc_old':>8} {'acc_new':>8} {'acc_all':>8} "
           f"{'avg_inc':>8} {'forget':>8}"]
  for name, r in results["methods"].items():
    spec = methods.registry().get(name)
    label = f"{name} (oracle)" if spec and spec.family == "oracle" else name
    lines.append(f"{label:<10} {_pct(r['final_acc_old']):>8} "
                 f"{_pct(r['final_acc_new']):>8} {_pct(r['final_acc_all']):>8} "
                 f"{_pct(r['average_incremental_accuracy']):>8} "
                 f"{_pct(r['forgetting']):>8}")
  for name, r in results["methods"].items():
    lines.append(f"accuracy matrix, {name} (row: after step t; column: "
                 f"group j):")
    for t, row in enumerate(r["accuracy_matrix"]):
      lines.append(f"  t={t}: " + " ".join(f"{_pct(a):>6}" for a in row))
  return "\n".join(lines)


def _pct(value):
  return "-" if value is None else f"{100 * value:.1f}"
