"""Figure for docs/tutorial.md: the learning curves of the tutorial's digits run.

    python docs/figures/digits_curves.py [--output-dir DIR]        writes digits_curves.png

Runs exactly the tutorial's `minidl train --output runs/digits` (in a temporary directory)
and keeps the curves.png it writes, so the figure is what a reader's own run produces.
``--epochs N`` caps the run (the documentation tests use it to check the script quickly).
"""
import argparse
import os
import shutil
import tempfile

from minidl.cli import main as minidl


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--epochs", type=int, help="cap the run at N epochs (a quick check of this script)")
    args = parser.parse_args()
    output = os.path.join(os.path.abspath(args.output_dir), "digits_curves.png")
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        cap = [] if args.epochs is None else ["--epochs", str(args.epochs)]
        if minidl(["train", "--output", "runs/digits", "--quiet"] + cap) != 0:
            raise SystemExit("minidl train failed")
        shutil.copyfile(os.path.join("runs", "digits", "curves.png"), output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
