"""The teaching notebook is executed and its outputs are checked, so it cannot rot.

docs/notebooks/teaching.ipynb is stored without outputs. The test runs it top to bottom with
nbclient on an ipykernel started with THIS interpreter (``sys.executable -m ipykernel_launcher``,
not whatever kernel spec named "python3" a machine has installed), in a temporary working
directory, and checks what each section prints: no cell raises (every cell asserts what it
shows), the printed lines are there, and the plot cell leaves a PNG. It needs the `test`
extra's nbclient, nbformat and ipykernel; without them it skips and says so.
"""
import re
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
TEACHING = ROOT / "docs" / "notebooks" / "teaching.ipynb"
CELL_TIMEOUT = 120          # seconds per cell; the whole notebook takes about 10
MISSING = [name for name in ("nbclient", "nbformat", "ipykernel") if find_spec(name) is None]
needs_nbclient = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed "
                                    f"(pip install -e '.[test]' installs them)")


def execute(path, workdir):
    """Run the notebook at ``path`` in ``workdir``; return the executed notebook.

    A cell that raises fails the test with nbclient's CellExecutionError, which shows the cell
    and the traceback.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    class ThisInterpreter(KernelSpecManager):
        """Every kernel name resolves to an ipykernel run by sys.executable."""

        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name=f"Python ({sys.executable})", language="python")

    notebook = nbformat.read(path, as_version=4)
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreter())
    NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT, allow_errors=False,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def stdout(cell):
    return "".join(output.get("text", "") for output in cell.outputs
                   if output.output_type == "stream" and output.name == "stdout")


def test_notebooks_are_stored_without_outputs():
    """Outputs come from running the notebook, never from the repository."""
    import json
    assert TEACHING in NOTEBOOKS
    for path in NOTEBOOKS:
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, \
                    f"{path.relative_to(ROOT)} cell {index} has outputs: clear them before committing"


@needs_nbclient
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_teaching_notebook_runs_and_shows_what_it_says(tmp_path):
    notebook = execute(TEACHING, tmp_path)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(cells) == 6, "one code cell per section; update this test with the notebook"
    for index, cell in enumerate(cells):
        errors = [output for output in cell.outputs if output.output_type == "error"]
        assert not errors, f"code cell {index} raised: {errors}"
    by_hand, finite_differences, digits, _, ranks, torch_cell = map(stdout, cells)
    curve = cells[3]

    # 1. Dense by hand equals minidl's Dense
    for name in ("y", "dW", "db", "dx"):
        assert re.search(rf"^{name} +\(.*\) +by hand == minidl", by_hand, re.M), by_hand

    # 2. central differences agree with backprop
    errors = [float(value) for value in re.findall(r"^(?:x|W|b) +\(.*\) +(\S+)$", finite_differences, re.M)]
    assert len(errors) == 3 and max(errors) < 1e-6, finite_differences
    assert "largest relative error" in finite_differences

    # 3. the MLP on the digits
    accuracy = re.search(r"^test accuracy (\d\.\d+)$", digits, re.M)
    assert accuracy and float(accuracy.group(1)) > 0.9, digits
    assert re.search(r"^stopped \(patience\) after \d+ epochs; best val_loss", digits, re.M), digits

    # 4. the early-stopping curve is an image
    assert any("image/png" in output.get("data", {}) for output in curve.outputs), \
        "the plot cell shows no image/png"
    assert "= best + patience 5" in stdout(curve), stdout(curve)

    # 5. three simulated ranks equal one process
    assert "3 simulated ranks and one process agree to 1e-12: True" in ranks, ranks
    assert "the 3 replicas are bitwise identical: True" in ranks, ranks

    # 6. PyTorch, or the reason it did not run (the kernel is this interpreter)
    if find_spec("torch") is None:
        assert torch_cell.startswith("skipped: PyTorch is not installed"), torch_cell
    else:
        assert "ok: all 5 rows within tolerance" in torch_cell, torch_cell

