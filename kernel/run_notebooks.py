"""Execute notebooks headless with the "Rust (sdscope)" kernel and check their rich output.

    .sdscope/venv-jupyter/bin/python kernel/run_notebooks.py [NOTEBOOK.ipynb ...] [--out DIR]
    .sdscope/venv-jupyter/bin/python kernel/run_notebooks.py --warm

Runs every notebooks/*.ipynb (or the ones given) one after the other with nbclient, each in a fresh kernel
started in the notebook's own folder, and writes the executed copies to --out (default .sdscope/executed).
The executed copies are signed (as `jupyter trust` does) with this machine's notebook secret, as JupyterLab
signs a notebook you run yourself, so that JupyterLab shows their HTML unsanitised; --no-trust leaves them
unsigned. Exits non-zero when a cell fails (its source and error are printed), and that includes a cell that panicked or
whose `?` returned an error, which evcxr reports only on stderr (any stderr line but sdscope's "[sdscope] "
progress lines fails the cell; see --allow-stderr and --lenient-stderr), or when an executed notebook has no
`text/html` output holding a picture (an <img> with a data:image/png;base64 source, or an inline <svg>).
The kernel inherits this process' environment: SDSCOPE_MODEL and the like reach the notebooks as they are.
`--warm` only starts the kernel (which compiles sdscope + tch for it the first time) and runs one trivial cell.

Needs `bash kernel/setup` first (the kernelspec in .sdscope/jupyter).
"""

import argparse
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
KERNEL_DIR = HERE / ".sdscope" / "jupyter"
PANIC = re.compile(r"^thread '[^']*'(?: \(\d+\))? panicked at", re.MULTILINE)
PICTURE = re.compile(r"<img[^>]*data:image/png;base64,|<svg[\s>]", re.IGNORECASE)


def log(msg):
    print(f"[notebooks] {msg}", file=sys.stderr, flush=True)


def use_project_kernelspec():
    if not (KERNEL_DIR / "kernels" / "sdscope" / "kernel.json").exists():
        sys.exit(f"no kernelspec in {KERNEL_DIR}: run `bash kernel/setup` first")
    paths = [str(KERNEL_DIR)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))


def make_client(nb, workdir, args, timings):
    from nbclient import NotebookClient

    def on_cell_start(cell, cell_index):
        timings.setdefault("first_cell_start", time.monotonic())
        timings["cell_start"] = time.monotonic()

    def on_cell_executed(cell, cell_index, execute_reply):
        timings.setdefault("cells", []).append((cell_index, time.monotonic() - timings["cell_start"]))

    return NotebookClient(
        nb,
        kernel_name=args.kernel,
        timeout=args.cell_timeout,
        # evcxr runs init.evcxr (:dep sdscope, use sdscope::prelude::*) before it answers kernel_info, so a cold
        # start (sdscope + tch compiled for the kernel) happens inside the start-up wait.
        startup_timeout=args.startup_timeout,
        resources={"metadata": {"path": str(workdir)}},
        allow_errors=False,
        record_timing=True,
        on_cell_start=on_cell_start,
        on_cell_executed=on_cell_executed,
    )


def pictures_in(nb):
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html")
            if html is None:
                continue
            if isinstance(html, list):
                html = "".join(html)
            n += len(PICTURE.findall(html))
    return n


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def describe_error_outputs(nb):
    """The failing cell's source and its error output, colour codes removed. (evcxr sends the error, a compiler
    message with a traceback, on iopub; its execute_reply has none, so nbclient's own message shows no error.)"""
    parts = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                tb = "\n".join(ANSI.sub("", line) for line in out.get("traceback", []))
                parts.append(
                    f"cell #{index}:\n------------------\n{cell.source}\n------------------\n"
                    f"{out.get('ename')}: {ANSI.sub('', out.get('evalue', ''))}\n{tb}"
                )
    return "\n".join(parts)


def stderr_problems(nb, allowed):
    """Cells that failed without telling Jupyter: evcxr 0.22 answers "ok" to a cell that panicked (the panic goes to
    stderr) or whose `?` returned an error (only the error's Display goes to stderr; eval_context.rs,
    error_trait_code and the catch_unwind wrapper). So: a panic, or a stderr line that is not an allowed progress
    line, fails the cell."""
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        err = "".join(
            "".join(o.text) if isinstance(o.text, list) else o.text
            for o in cell.get("outputs", [])
            if o.get("output_type") == "stream" and o.get("name") == "stderr"
        )
        if not err.strip():
            continue
        if PANIC.search(err):
            problems.append((index, cell, "panicked", err))
            continue
        unexpected = [line for line in err.splitlines() if line.strip() and not allowed.search(line)]
        if unexpected:
            problems.append((index, cell, "wrote to stderr (how evcxr reports an error returned with `?`)", err))
    return problems


# sdscope's result types, as their `Debug` output starts.
DISPLAY_TYPES = re.compile(
    r"^(Picture|PictureGrid|Plot|Figure|Html|Representations|AttentionMaps|TokenTable|Generation|Explorer)\b"
)


def debug_fallbacks(nb):
    """Cells whose value is one of sdscope's result types but came out as text only. evcxr shows a cell's final
    expression through its `evcxr_display` method and falls back to `Debug` when that attempt does not compile,
    which happens e.g. when the expression moves a variable bound earlier in the same cell."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {}) if out.get("output_type") == "execute_result" else {}
            text = data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            if "text/html" not in data and DISPLAY_TYPES.match(text.strip()):
                found.append((index, cell, text.strip()[:200]))
    return found


def warm(args):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1"), nbformat.v4.new_code_cell("2 + 2")]
    timings = {}
    start = time.monotonic()
    make_client(nb, HERE, args, timings).execute()
    cells = dict(timings.get("cells", []))
    log(
        f"kernel ready in {timings['first_cell_start'] - start:.1f} s (start-up with :dep sdscope and the prelude); "
        f"a trivial cell then took {cells.get(0, 0):.2f} s and {cells.get(1, 0):.2f} s"
    )


def run(args):
    import nbformat
    from nbclient.exceptions import CellExecutionError, DeadKernelError
    from nbformat.sign import NotebookNotary

    notebooks = [Path(p).resolve() for p in args.notebooks] or sorted((HERE / "notebooks").glob("*.ipynb"))
    if not notebooks:
        sys.exit("no notebooks to run")
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    allowed = re.compile(args.allow_stderr)
    passed = {k: v for k, v in os.environ.items() if k.startswith(("SDSCOPE_", "HF_"))}
    log(f"{len(notebooks)} notebook(s), kernel {args.kernel}, executed copies to {out_dir}")
    log("environment for the notebooks: " + (", ".join(f"{k}={v}" for k, v in sorted(passed.items())) or "(none)"))

    failures, summary = [], []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        timings = {}
        start = time.monotonic()
        error = None
        log(f"{path.name}: running {sum(c.cell_type == 'code' for c in nb.cells)} code cells")
        try:
            make_client(nb, path.parent, args, timings).execute()
        except CellExecutionError as e:
            error = describe_error_outputs(nb) or str(e)
        except DeadKernelError as e:
            error = f"the kernel died: {e}\n(see the kernel's messages above: a compile error in sdscope, or a crash)"
        except TimeoutError as e:
            error = f"timed out: {e}"
        except RuntimeError as e:  # e.g. the kernel did not start: "Kernel didn't respond in N seconds"
            error = f"{type(e).__name__}: {e}"
        wall = time.monotonic() - start
        problems = stderr_problems(nb, allowed)
        if problems and error is None and not args.lenient_stderr:
            error = "\n".join(
                f"cell #{i} {what}:\n------------------\n{cell.source}\n------------------\n{err}" for i, cell, what, err in problems
            )
        elif problems:
            for i, cell, what, err in problems:
                log(f"{path.name}: warning: cell #{i} {what}: {err.strip()[:500]}")
        target = out_dir / path.name
        if args.trust:
            # As JupyterLab does for a notebook you run yourself: signed with this machine's notebook secret
            # (JUPYTER_DATA_DIR), so that JupyterLab shows its HTML outputs unsanitised. Untrusted, JupyterLab's
            # sanitizer drops inline <svg> from text/html outputs (a data:image/png <img> survives).
            NotebookNotary().sign(nb)
        nbformat.write(nb, target)
        pictures = pictures_in(nb)
        fallbacks = debug_fallbacks(nb)
        kernel_start = timings.get("first_cell_start", start + wall) - start
        cells = timings.get("cells", [])
        slowest = max(cells, key=lambda c: c[1]) if cells else None
        line = (
            f"{path.name}: {wall:.1f} s wall (kernel start {kernel_start:.1f} s, {len(cells)} cells"
            + (f", slowest cell #{slowest[0]} {slowest[1]:.1f} s" if slowest else "")
            + f"), {pictures} picture(s) in text/html outputs"
        )
        summary.append(line)
        if error is not None:
            failures.append(path.name)
            print(f"\n===== {path.name}: a cell failed =====\n{error}\n", file=sys.stderr, flush=True)
        elif fallbacks:
            failures.append(path.name)
            for i, cell, text in fallbacks:
                print(
                    f"\n===== {path.name}: cell #{i} shows its value as Debug text, not HTML =====\n{cell.source}\n"
                    f"------------------\n{text}\n(evcxr could not call evcxr_display on it; when the last expression "
                    f"moves a variable bound in the same cell, end the cell with `value.evcxr_display();` instead)\n",
                    file=sys.stderr,
                    flush=True,
                )
        elif pictures == 0:
            failures.append(path.name)
            print(
                f"\n===== {path.name}: no text/html output with an <img src=\"data:image/png;base64,...\"> "
                f"or an inline <svg> =====\n",
                file=sys.stderr,
                flush=True,
            )
        log(line + (" FAILED" if path.name in failures else ""))

    print("\n".join(["", "notebook timings:"] + ["  " + s for s in summary]), file=sys.stderr)
    if failures:
        log(f"FAILED: {', '.join(failures)} (executed copies, with the outputs up to the error, in {out_dir})")
        return 1
    log(f"all {len(notebooks)} notebook(s) passed")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", help="notebooks to run (default: notebooks/*.ipynb)")
    p.add_argument("--out", default=str(HERE / ".sdscope" / "executed"), help="folder for the executed copies")
    p.add_argument("--kernel", default="sdscope", help="kernel name (default: sdscope)")
    p.add_argument("--cell-timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    p.add_argument(
        "--startup-timeout", type=int, default=1800, help="seconds for the kernel to start, compile included (1800)"
    )
    p.add_argument(
        "--no-trust", dest="trust", action="store_false", help="do not sign the executed copies (jupyter trust)"
    )
    p.add_argument(
        "--allow-stderr",
        default=r"^\[sdscope\] ",
        help="regex of stderr lines that are progress, not errors (default: sdscope's own '[sdscope] ' lines)",
    )
    p.add_argument(
        "--lenient-stderr", action="store_true", help="only warn about panics and unexpected stderr lines in cells"
    )
    p.add_argument("--warm", action="store_true", help="only start the kernel once and run a trivial cell")
    args = p.parse_args()
    use_project_kernelspec()
    if args.warm:
        warm(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
