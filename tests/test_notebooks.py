"""Every notebook in notebooks/ is stored without outputs and runs top to
bottom on CPU (CIL_JAX_NOTEBOOK_QUICK=1: a few epochs, digits), in a fresh
kernel working in a temporary directory, on two CPU devices so the
pmapped step splits its batches."""

import glob
import os
import time

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted(glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "notebooks", "*.ipynb")))


def test_the_three_notebooks_exist():
  assert [os.path.basename(p) for p in NOTEBOOKS] == [
      "ablation_sweep.ipynb", "add_classes.ipynb", "colab_tpu.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_stored_without_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  for i, cell in enumerate(notebook.cells):
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          f"{path} cell {i} has outputs: clear them before committing "
          f"(Jupyter: Edit > Clear All Outputs; or jupyter nbconvert "
          f"--clear-output --inplace {path}).")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
  monkeypatch.setenv("CIL_JAX_NOTEBOOK_QUICK", "1")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  notebook = nbformat.read(path, as_version=4)
  start = time.perf_counter()
  # Any cell's error fails the test (CellExecutionError names the cell).
  NotebookClient(notebook, timeout=300, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  print(f"{os.path.basename(path)}: {time.perf_counter() - start:.1f} s")
  outputs = [o for c in notebook.cells if c.cell_type == "code"
             for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert images, f"{path} showed no plot"
  text = "".join(o.get("text", "") for o in outputs)
  if "colab_tpu" in path:
    assert "CpuDevice(id=1)" in text  # both devices, one pmapped step
  if "ablation_sweep" in path:
    assert "vmapped members:" in text and "one at a time:" in text
