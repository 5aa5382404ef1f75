"""The documentation is tested: its code runs, its commands print what it shows, its pointers exist.

What a Markdown file in docs/ (and README.md) may contain, and what this module checks:

- ```python blocks run: a file's blocks in order, in one namespace, in a fresh temporary working
  directory. A first line ``# requires: torch`` or ``# requires: mpi`` skips the block when
  torch, or mpi4py with an ``mpiexec``, is absent; ``# no-run`` never runs it (for things like
  a full MNIST run).
- A ```python block followed by a paragraph that says just "prints" (or "Output:") and then a
  ```text block must print that text, compared as for console blocks below.
- ```console blocks of the files in CONSOLE_DOCS: every ``$ command`` runs (through bash, with
  this interpreter's bin directory first on PATH) in the same working directory as the
  file's python blocks, in document order, and prints what the lines under it show.
  ``…`` matches anything (timings, throughput); other numbers must agree to 1e-3 relative
  (integers exactly), and numbers below 1e-9 in size count as rounding noise. ``pip`` and
  ``git`` commands are shown, not run. The same markers apply. A README command that the
  tutorial also runs is not run twice: the README must show the tutorial's output for it.
- ```py blocks whose first line is ``# <path of a repository file>`` quote that file: every
  other line (``...`` excepted) must occur in it verbatim, up to indentation.
- Every ``tests/<file>.py::<name>`` names a ``def <name>`` in that file, and in
  docs/backprop.md and docs/optimizers.md every ```text block (a formula) is followed by such
  a reference before the next heading.
- docs/conventions.md quotes the tolerances of tests/conftest.py with their values.
- Every relative link to a Markdown file points to an existing file and, with ``#anchor``,
  to one of its headings (GitHub's anchor rule).
- Every image a document shows exists, every PNG in docs/figures is written by a script
  there, and the scripts run (with the arguments in FIGURE_ARGS, to keep this quick).
"""
import contextlib
import io
import math
import os
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [path for path in [ROOT / "README.md"] if path.exists()]
CONSOLE_DOCS = ("docs/tutorial.md", "README.md")    # files whose shell commands are quick enough to run
FORMULA_DOCS = ("docs/backprop.md", "docs/optimizers.md")
NOT_RUN = ("pip", "git")                      # setup commands: shown, never run
COMMAND_TIMEOUT = 300

FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
TEST_REFERENCE = re.compile(r"tests/([\w/]+\.py)::(\w+)")
NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
TOKEN = re.compile(f"(…|{NUMBER})")


def relative(path):
    return path.relative_to(ROOT).as_posix()


def blocks(path):
    """[(language, first line number, code, expected stdout or None)] of a Markdown file's blocks.

    The expected stdout of a python block is the ```text block after it when only a "prints"
    paragraph stands between them.
    """
    text = path.read_text()
    matches = list(FENCE.finditer(text))
    result = []
    for index, match in enumerate(matches):
        expected = None
        following = matches[index + 1] if index + 1 < len(matches) else None
        if match.group(1) == "python" and following is not None and following.group(1) == "text":
            between = text[match.end():following.start()].strip().lower()
            if between in ("prints", "prints:", "output:"):
                expected = _trim([line.rstrip() for line in following.group(2).rstrip("\n").split("\n")])
        result.append((match.group(1), text.count("\n", 0, match.start()) + 2, match.group(2), expected))
    return result


def have_mpi():
    return find_spec("mpi4py") is not None and shutil.which("mpiexec", path=bin_path()) is not None


def bin_path():
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


def skip_reason(code):
    """Why a block must not run here (its marker line), or None."""
    first = code.lstrip("\n").split("\n", 1)[0].strip()
    if first == "# no-run":
        return "no-run"
    if first == "# requires: torch" and find_spec("torch") is None:
        return "torch is not installed"
    if first == "# requires: mpi" and not have_mpi():
        return "mpi4py or mpiexec is not available"
    return None


# ----------------------------------------------------------------- console blocks
def commands(code):
    """[(command, expected output lines)] of a console block."""
    result = []
    for line in code.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            result.append((line[2:], []))
        elif result:
            result[-1][1].append(line.rstrip())
    return [(command, _trim(lines)) for command, lines in result]


def _trim(lines):
    while lines and not lines[-1]:
        lines = lines[:-1]
    return lines


def line_matches(expected, actual):
    """True when ``actual`` is ``expected`` with … as a wildcard and numbers within tolerance."""
    parts = TOKEN.split(expected)
    pattern = "".join("(.*?)" if part == "…" else f"({NUMBER})" if i % 2 else re.escape(part)
                      for i, part in enumerate(parts))
    match = re.fullmatch(pattern, actual)
    if match is None:
        return False
    numbers = [part for i, part in enumerate(parts) if i % 2 and part != "…"]
    found = [group for group, part in zip(match.groups(), (p for i, p in enumerate(parts) if i % 2))
             if part != "…"]
    for want, got in zip(numbers, found):
        a, b = float(want.replace(",", "")), float(got.replace(",", ""))
        integer = re.fullmatch(r"[-+]?[\d,]+", want) is not None
        if (a != b) if integer else not math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-9):
            return False
    return True


def assert_output(expected, printed, what, where):
    actual = _trim([line.rstrip() for line in printed.rstrip("\n").split("\n")]) if printed.strip() else []
    assert len(actual) == len(expected) and all(map(line_matches, expected, actual)), \
        f"{where}: {what} printed\n{printed}\nbut the document shows\n" + "\n".join(expected)


def run_command(command, expected, cwd, where):
    environment = dict(os.environ, PATH=bin_path(), MPLBACKEND="Agg", COLUMNS="100")
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=environment, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0 or "error:" in "\n".join(expected), \
        f"{where}: `{command}` exited with {done.returncode}:\n{done.stdout}"
    assert_output(expected, done.stdout, f"`{command}`", where)


TUTORIAL_OUTPUTS = {command: expected for language, _, code, _ in blocks(ROOT / "docs" / "tutorial.md")
                    if language == "console" and not skip_reason(code) for command, expected in commands(code)}


# ----------------------------------------------------------------- running a document
@pytest.mark.parametrize("path", DOCS, ids=[relative(path) for path in DOCS])
def test_code_in_documents_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    run_console = relative(path) in CONSOLE_DOCS
    namespace = {"__name__": "__docs__"}
    ran = 0
    for language, line, code, expected in blocks(path):
        where = f"{relative(path)}:{line}"
        if language not in ("python", "console") or (language == "console" and not run_console):
            continue
        if skip_reason(code):
            continue
        if language == "python":
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(code, where, "exec"), namespace)
            sys.stdout.write(printed.getvalue())
            if expected is not None:
                assert_output(expected, printed.getvalue(), "the block", where)
        else:
            for command, expected in commands(code):
                if command.split()[0] in NOT_RUN:
                    continue
                if path.name == "README.md" and command in TUTORIAL_OUTPUTS:
                    assert expected == TUTORIAL_OUTPUTS[command], \
                        f"{where}: `{command}` is shown with an output other than the tutorial's:\n" + \
                        "\n".join(TUTORIAL_OUTPUTS[command])
                    continue
                run_command(command, expected, tmp_path, where)
        ran += 1
    # every document teaches with code that runs; one whose blocks are all skipped or in other
    # languages would pass this test while checking nothing
    assert ran > 0, f"{relative(path)} has no runnable python or console block"


# ----------------------------------------------------------------- quotes and references
@pytest.mark.parametrize("path", DOCS, ids=[relative(path) for path in DOCS])
def test_quoted_code_is_in_the_quoted_file(path):
    for language, line, code, _ in blocks(path):
        lines = code.rstrip("\n").split("\n")
        header = re.fullmatch(r"#\s*(\S+\.\w+)\b.*", lines[0].strip())
        if language != "py" or header is None:
            continue
        source = ROOT / header.group(1)
        assert source.is_file(), f"{relative(path)}:{line} quotes {header.group(1)}, which does not exist"
        present = {text.strip() for text in source.read_text().split("\n")}
        for offset, quoted in enumerate(lines[1:], start=1):
            if quoted.strip() and quoted.strip() != "...":
                assert quoted.strip() in present, \
                    f"{relative(path)}:{line + offset}: `{quoted.strip()}` is not in {header.group(1)}"


@pytest.mark.parametrize("path", DOCS, ids=[relative(path) for path in DOCS])
def test_referenced_tests_exist(path):
    for match in TEST_REFERENCE.finditer(path.read_text()):
        file, name = match.groups()
        test_file = ROOT / "tests" / file
        assert test_file.is_file(), f"{relative(path)} points to tests/{file}, which does not exist"
        assert re.search(rf"^\s*def {name}\(", test_file.read_text(), re.M), \
            f"{relative(path)} points to tests/{file}::{name}, which is not defined there"


@pytest.mark.parametrize("name", FORMULA_DOCS)
def test_every_formula_points_to_its_test(name):
    pending, inside = None, False
    for number, text in enumerate((ROOT / name).read_text().split("\n"), start=1):
        if text.startswith("```"):
            if not inside and text.strip() == "```text":
                pending = number
            inside = not inside
        elif inside:
            continue
        elif TEST_REFERENCE.search(text):
            pending = None
        elif text.startswith("#"):
            assert pending is None, f"{name}:{pending}: formula block without a tests/...::test_name reference"
    assert pending is None, f"{name}:{pending}: formula block without a tests/...::test_name reference"


def test_conventions_quote_the_tolerances_of_conftest():
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    tolerances = re.findall(r"^(\w+_TOL)\s*=\s*([0-9.eE+-]+)", conftest, re.M)
    assert tolerances
    lines = (ROOT / "docs" / "conventions.md").read_text().split("\n")
    for name, value in tolerances:
        assert any(f"`{name}`" in line and value in line for line in lines), \
            f"docs/conventions.md must give `{name}` = {value} (tests/conftest.py) on one line"


def anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", DOCS, ids=[relative(path) for path in DOCS])
def test_links_between_documents_resolve(path):
    for target, fragment in re.findall(r"\]\(([^)#\s]*\.md)(?:#([^)\s]+))?\)", path.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        linked = (path.parent / target).resolve()
        assert linked.is_file(), f"{relative(path)} links to {target}, which does not exist"
        if fragment:
            headings = re.findall(r"^#+\s+(.*)$", linked.read_text(), re.M)
            assert fragment in {anchor(heading) for heading in headings}, \
                f"{relative(path)} links to {target}#{fragment}, which is not a heading there"


# ----------------------------------------------------------------- figures
FIGURES = ROOT / "docs" / "figures"
SCRIPTS = sorted(FIGURES.glob("*.py"))
FIGURE_ARGS = {"digits_curves.py": ["--epochs", "2"]}        # the full run is the tutorial's own


@pytest.mark.parametrize("path", DOCS, ids=[relative(path) for path in DOCS])
def test_shown_images_exist(path):
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", path.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (path.parent / target).is_file(), f"{relative(path)} shows {target}, which does not exist"


def test_every_figure_is_written_by_a_script():
    scripts = "\n".join(script.read_text() for script in SCRIPTS)
    for png in FIGURES.glob("*.png"):
        assert png.name in scripts, f"docs/figures/{png.name} is not written by a script in docs/figures"


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_figure_scripts_run(script, tmp_path):
    """Each script runs from a copy in a temporary directory, so it writes its PNG there."""
    copy = tmp_path / script.name
    shutil.copyfile(script, copy)
    environment = dict(os.environ, PATH=bin_path(), MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, str(copy)] + FIGURE_ARGS.get(script.name, []), cwd=tmp_path,
                          env=environment, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr
    written = {path.name for path in tmp_path.glob("*.png")}
    assert written and written <= {path.name for path in FIGURES.glob("*.png")}, written
