"""report.md and report.png from a wiou-bench results.json (no TensorFlow needed).

    python -m wiou_ops.bench.report DIR      # rewrites DIR/report.md and DIR/report.png
"""

import json
import pathlib
import sys

from wiou_ops.bench import harness

BASELINE, BASELINE_EAGER = "seed tf.function", "seed eager"


def _speedup(base, variant, base_ms, variant_ms):
    """The speed-up with its bootstrap 95 % interval when the samples were kept."""
    if base is not None and variant is not None:
        return harness.speedup_text(base, variant)
    return f"{base_ms / variant_ms:.2f}x"


def _isa(results):
    isa = results.get("isa")
    return f" ({isa.upper()})" if isa else ""


def _shape(case):
    return "x".join(map(str, case["shape"]))


def markdown(results):
    lines = [
        f"# wiou-bench: seed class vs wiou_ops ({results['device']})",
        "",
        f"Machine: {results['cpu']}{_isa(results)}, {results['cores']} cores. "
        f"TensorFlow {results['tensorflow']}, "
        f"Keras {results['keras']}, Python {results['python']}, wiou_ops {results['wiou_ops']}. "
        f"{results['timestamp']}. Median of {results['rounds']} interleaved rounds after warm-up; "
        "speed-ups against the seed class measured in the same run, with their bootstrap 95 % "
        "interval over the rounds in brackets.",
        "",
        "Byte floor: fewest bytes (forward: read y and p; forward+backward: read them twice and "
        "write the gradient) over the best streaming-read bandwidth measured in the same run. It "
        "prices writes like reads; where streaming writes overlap with reads, 'x floor' can dip "
        "below 1, and `native` forward+backward with hard labels reads its 2-bit label masks "
        "instead of y and p a second time (fewer bytes than this floor). Peak memory: extra resident bytes of three calls in a fresh process, inputs "
        "excluded (includes XLA's one-off compilation for jit variants).",
    ]
    for case in results["cases"]:
        floor_ms = case["bytes"] / case["read_gbps"] / 1e6
        base_run = case["variants"][BASELINE]
        eager_run = case["variants"][BASELINE_EAGER]
        lines += [
            "",
            f"## {_shape(case)}, y_pred {case['pred_dtype']}, y_true {case['true_dtype']}, "
            f"{case['pass']}",
            "",
            f"Read bandwidth {case['read_gbps']:.1f} GB/s, fewest bytes "
            f"{case['bytes'] / 1e6:.1f} MB, floor {floor_ms:.2f} ms.",
            "",
            "| variant | median ms | p20 ms | p80 ms | vs seed tf.function | vs seed eager "
            "| x floor | effective GB/s | peak MB | rel. error vs float64 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, v in case["variants"].items():
            peak = v.get("peak_bytes")
            vs_seed = _speedup(base_run.get("samples_s"), v.get("samples_s"),
                               base_run["median_ms"], v["median_ms"])
            vs_eager = _speedup(eager_run.get("samples_s"), v.get("samples_s"),
                                eager_run["median_ms"], v["median_ms"])
            lines.append(
                f"| {name} | {v['median_ms']:.2f} | {v['p20_ms']:.2f} | {v['p80_ms']:.2f} | "
                f"{vs_seed} | {vs_eager} | "
                f"{v['median_ms'] / floor_ms:.2f} | {v['effective_gbps']:.1f} | "
                f"{'-' if peak is None else f'{peak / 1e6:.0f}'} | {v['rel_error']:.1e} |")
    if results.get("options"):
        lines += _options_table(results["options"])
    if results.get("label_masks"):
        lines += _label_masks_table(results["label_masks"])
    return "\n".join(lines) + "\n"


def _label_masks_table(rows):
    lines = [
        "",
        "## The native gradient from label masks, forward+backward",
        "",
        "Native as shipped (hard labels: the forward writes 2 bits per element, the backward "
        "reads them) against native with the backward from y and p, interleaved, same run.",
        "",
        "| shape | y_pred/y_true | label masks ms | y and p ms | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        masks, inputs = row["median_ms"]["label masks"], row["median_ms"]["y and p"]
        samples = row.get("samples_s", {})
        speedup = _speedup(samples.get("y and p"), samples.get("label masks"), inputs, masks)
        lines.append(f"| {_shape(row)} | {row['pred_dtype']}/{row['true_dtype']} | "
                     f"{masks:.2f} | {inputs:.2f} | {speedup} |")
    return lines


def _options_table(options):
    impls = options["implementations"]
    base = options["baseline_ms"]
    lines = [
        "",
        f"## What each option costs: {_shape(options)}, y_pred {options['pred_dtype']}, "
        f"y_true {options['true_dtype']}, {options['pass']}",
        "",
        f"Median ms, speed-up against the seed class in tf.function ({base:.2f} ms, same run) "
        "with its bootstrap 95 % interval. "
        "Weight map: a per-pixel float32 sample_weight, one more input stream.",
        "",
        "| options | " + " | ".join(impls) + " |",
        "|---|" + "---:|" * len(impls),
    ]
    samples = options.get("samples_s", {})
    for option_set in options["option_sets"]:
        cells = []
        for impl in impls:
            key = f"{impl}|{option_set}"
            ms = options["median_ms"][key]
            speedup = _speedup(samples.get(options["baseline"]), samples.get(key), base, ms)
            cells.append(f"{ms:.2f}, {speedup}")
        lines.append(f"| {option_set} | " + " | ".join(cells) + " |")
    return lines


def plot(results, path):
    """Speed-up over the seed (tf.function) against size, and effective GB/s against the
    measured bandwidth, a row per pass; colour = variant, line style = dtype pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    passes = sorted({c["pass"] for c in results["cases"]})
    names = list(dict.fromkeys(n for c in results["cases"] for n in c["variants"]))
    pairs = list(dict.fromkeys(f"{c['pred_dtype']}/{c['true_dtype']}" for c in results["cases"]))
    styles = ["-", "--", ":", "-."]
    color = {name: f"C{k % 10}" for k, name in enumerate(names)}
    style = {pair: styles[k % len(styles)] for k, pair in enumerate(pairs)}
    fig, axes = plt.subplots(len(passes), 2, figsize=(13, 4.2 * len(passes)), squeeze=False)
    for row, pass_name in zip(axes, passes):
        cases = [c for c in results["cases"] if c["pass"] == pass_name]
        series = {}
        for case in cases:
            n = 1
            for d in case["shape"]:
                n *= d
            pair = f"{case['pred_dtype']}/{case['true_dtype']}"
            base = case["variants"][BASELINE]["median_ms"]
            for name, v in case["variants"].items():
                series.setdefault((name, pair), []).append(
                    (n, base / v["median_ms"], v["effective_gbps"]))
        for (name, pair), points in series.items():
            points.sort()
            xs = [p[0] for p in points]
            kw = dict(marker="o", markersize=3, color=color[name], linestyle=style[pair])
            row[0].plot(xs, [p[1] for p in points], **kw)
            row[1].plot(xs, [p[2] for p in points], **kw)
        bandwidth = max(c["read_gbps"] for c in cases)
        row[1].axhline(bandwidth, color="black", linewidth=0.8)
        row[1].annotate(f"measured read bandwidth {bandwidth:.0f} GB/s", (0.01, 0.97),
                        xycoords="axes fraction", va="top", fontsize=8)
        for ax, title in zip(row, ["speed-up vs seed class in tf.function",
                                   "effective GB/s (fewest bytes / time)"]):
            ax.set_xscale("log")
            ax.set_xlabel("elements")
            ax.set_title(f"{title}, {pass_name}", fontsize=10)
            ax.grid(True, alpha=0.3)
        row[0].set_yscale("log")
    handles = [Line2D([], [], color=color[n], marker="o", label=n) for n in names]
    handles += [Line2D([], [], color="gray", linestyle=style[p], label=p) for p in pairs]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"wiou-bench on {results['cpu']} ({results['cores']} cores)")
    fig.tight_layout(rect=(0, 0, 0.8, 0.97))
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write(results, out):
    """Writes results.json, report.md and report.png into ``out``; returns the markdown."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (out / "report.md").write_text(text)
    try:
        plot(results, out / "report.png")
    except ImportError:
        print("[wiou-bench] matplotlib is not installed: no report.png "
              "(pip install 'wiou-ops[bench]')", file=sys.stderr)
    return text


if __name__ == "__main__":
    folder = pathlib.Path(sys.argv[1])
    write(json.loads((folder / "results.json").read_text()), folder)
