"""Plot step time against batch size: minidl, PyTorch and the bare-GEMM bound.

Reads the JSON lines of ``benchmarks/peers.py --json`` (a file, or ``-`` for standard input),
or runs it with ``--run`` (extra arguments go to peers.py) and keeps its output beside the
figure; draws one panel per dtype and thread count, log-log axes, and writes a PNG.

    python benchmarks/peers.py --json > benchmarks/peers.jsonl
    python benchmarks/plot.py benchmarks/peers.jsonl -o benchmarks/step_vs_batch.png
    python benchmarks/plot.py --run -o benchmarks/step_vs_batch.png -- --threads 1
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CURVES = (("minidl", "step_ms", "minidl step", "C0", "o-"),
          ("torch", "step_ms", "PyTorch step", "C3", "s-"),
          ("minidl", "gemm_ms", "bare GEMMs (bound)", "0.4", "x--"))


def read_rows(lines):
    rows = [json.loads(line) for line in lines if line.strip().startswith("{")]
    return [row for row in rows if row.get("benchmark") != "digits" and row.get("step_ms")]


def plot(rows, output):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(row["dtype"], row["threads"]) for row in rows})
    if not panels:
        sys.exit("no step timings in the input (run benchmarks/peers.py --json)")
    columns = min(2, len(panels))
    lines = -(-len(panels) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(5.2 * columns, 3.9 * lines), squeeze=False)
    for ax, (dtype, threads) in zip(axes.flat, panels):
        here = [row for row in rows if (row["dtype"], row["threads"]) == (dtype, threads)]
        for impl, key, label, color, style in CURVES:
            points = sorted((row["batch"], row[key]) for row in here
                            if row["impl"] == impl and row.get(key) and not row.get("step_derived"))
            if len(points) > 0:
                ax.plot(*zip(*points), style, color=color, label=label)
        batches = sorted({row["batch"] for row in here})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(batch) for batch in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel("ms per training step")
        ax.set_title(f"{dtype}, {threads} thread{'s' if threads > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    momentum = rows[0].get("momentum")
    figure.suptitle(f"MLP 784-256-256-10, SGD momentum {momentum}\n(benchmarks/peers.py)", fontsize=10)
    figure.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    print(f"wrote {output}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", help="JSON lines of peers.py --json ('-': stdin)")
    parser.add_argument("-o", "--output", default=str(HERE / "step_vs_batch.png"))
    parser.add_argument("--run", action="store_true", help="run benchmarks/peers.py --json first")
    parser.add_argument("peers_args", nargs="*", help="arguments for peers.py (after --)")
    args = parser.parse_args(argv)
    if args.run:
        command = [sys.executable, str(HERE / "peers.py"), "--json", "--no-digits", *args.peers_args]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        lines = done.stdout.splitlines()
        saved = Path(args.output).with_suffix(".jsonl")
        saved.write_text(done.stdout)
        print(f"wrote {saved}")
    elif args.input == "-":
        lines = sys.stdin.read().splitlines()
    elif args.input:
        lines = Path(args.input).read_text().splitlines()
    else:
        parser.error("give a JSON-lines file, '-', or --run")
    plot(read_rows(lines), args.output)


if __name__ == "__main__":
    main()
