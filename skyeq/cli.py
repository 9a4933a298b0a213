"""The ``skyeq`` command line: ``skyeq match FILES...``, ``skyeq demo`` and ``skyeq warmup``.

Uses the public API of :mod:`skyeq` and :mod:`skyeq.io`, and the batch writer of
`skyeq.io` (``_Batch``: the images, the table and the plot are replaced together or not
at all). Exit codes: 0 success (also when the reader of stdout stops reading early, as
``| head`` does: every file is written before anything is printed), 1 a runtime
failure (unreadable or truncated input, no WCS, bad skylist, an output that cannot be
written, ...), 2 a usage error, 130 interrupted (Ctrl-C). An error is reported as one
line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

import skyeq

from ._methods import METHODS, MODELS, PAIR_STATS
from ._records import DEFAULT_DQBITS
from .stats import STATISTICS, SkyStat

if TYPE_CHECKING:
    from . import io

#: The statistic and clipping defaults, from their one home (`SkyStat`).
_DEFAULT_STAT = SkyStat()

__all__ = ["main"]


_MATCH_DESCRIPTION = """\
Compute the sky (background) level of every input image, optionally matching the
levels of overlapping images to one another, and record the result in three keywords
of each image's SCI and primary headers:

  BKGLEVEL  the sky level of the image (data units)
  BKGMETH   the method used
  BKGSUB    whether the sky was subtracted from the data

Inputs are FITS files (the image in a SCI extension, or in the primary HDU of a
plain file, with a celestial WCS in its header and an optional DQ extension) and/or
JWST-style association files (*.json): the science members of products[*].members[*],
paths relative to the association file. JWST products (*_cal.fits and other files with
an ASDF extension) are read with their gwcs when stdatamodels is installed (pip
install "skyeq[jwst]"), and written back through it (the keywords then go where the
datamodel puts them, the primary header, with S_SKYMAT = COMPLETE or SKIPPED).

Images that share a group id share one sky: an association member's group_id, else
the JWST exposure of the file (meta.group_id, or the PROGRAM, OBSERVTN, VISIT,
VISITGRP, SEQ_ID, ACT_ID and EXPOSURE keywords), so that all detectors of one exposure
share one sky, as in the JWST step. Other images, and all with --ungrouped, are
matched independently.

Methods:
  local         the clipped statistic of each image (group) on its own.
  global        the smallest local sky, given to every image.
  match         offsets that minimise the differences between the images' statistics
                inside their overlaps (least squares); the offsets are referenced to the
                image with the lowest sky (or the highest, with --match-up). BKGLEVEL
                is then a relative offset, not the true sky.
  global+match  the match offsets plus the smallest (local sky - offset): every
                image's sky is brought to a common zero.
  user          the values of a two-column file "image-name sky" (--skylist).

Nothing is written unless --output-dir or --in-place is given: without them the
skies are only printed (and written to --table). Every output path is checked
before the first image is read. The files (images, --table, --plot) are replaced all
together or not at all: each is first written completely to a hidden temporary file
beside it (.NAME.<12 hex digits>.skyeq-tmp), and only when all are written are they
renamed over their targets, so a failed or interrupted run (Ctrl-C) leaves every file
as it was (this needs free disk space for one new copy of every file). Temporary files
that a killed run left behind are removed by the next write of the same file once
they are 10 minutes old. A tile-compressed SCI extension is written uncompressed when
the subtracted data go into it (compressing them again would lose precision).

Re-running on images that already carry BKGLEVEL/BKGSUB: BKGLEVEL without BKGSUB,
BKGSUB without BKGLEVEL, or a BKGSUB that differs from --subtract is an error
(nothing is written). With --subtract on already subtracted images, the new sky is
measured on the subtracted data and added to the previous BKGLEVEL; without
--subtract the previous BKGLEVEL is replaced. An image whose sky cannot be computed
keeps its keywords and data unchanged.
"""

_MATCH_EPILOG = """\
exit status: 0 on success, 1 if the run failed (an unreadable, truncated or malformed
input, no celestial WCS, a bad skylist, an output that cannot be written, ...), 2 for a
usage error, 130 if interrupted.

examples:
  skyeq match *_cal.fits --table skies.ecsv
  skyeq match image3_asn.json --method global+match --subtract --output-dir skymatched/
  skyeq match a.fits b.fits --method user --skylist skies.txt --in-place
"""


class _UsageError(Exception):
    """A command-line usage error, already reported on stderr."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a usage error as one line on stderr."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line and stop parsing with a usage error."""
        text = " ".join(str(message).split())
        sys.stderr.write(f"{self.prog}: error: {text} (see '{self.prog} --help')\n")
        raise _UsageError(text)


def _positive_int(text: str) -> int:
    """Parse an integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _dqbits(text: str) -> str | None:
    """Parse --dqbits: 'none' turns the DQ arrays off."""
    return None if text.strip().lower() == "none" else text


def _add_match_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``skyeq match`` and its options."""
    p = sub.add_parser(
        "match",
        help="match the sky levels of FITS images or association files",
        description=_MATCH_DESCRIPTION,
        epilog=_MATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="FILE_OR_ASN",
        help="FITS images and/or association files (*.json)",
    )
    g = p.add_argument_group("sky method")
    g.add_argument(
        "--method", choices=METHODS, default="match",
        help="how the sky is computed (see above); default: %(default)s, as the JWST step",
    )
    g.add_argument(
        "--match-up", "--no-match-down", dest="match_down", action="store_false",
        help="reference the match offsets to the image with the highest sky instead of "
        "the lowest (default: lowest; 'match' and 'global+match' only)",
    )
    g.add_argument(
        "--anchor", choices=("global", "component"), default="global",
        help="with several connected components (mosaics that do not overlap): one "
        "reference for all (global, the default) or each component referenced to its own "
        "lowest image (component; their skies are then not tied to each other)",
    )
    g.add_argument(
        "--robust", action="store_true",
        help="down-weight overlaps whose sky difference disagrees with the others "
        "(iteratively reweighted least squares; match methods only)",
    )
    g.add_argument(
        "--model", choices=MODELS, default="constant",
        help="the sky of an image: one level (constant, the default) or a plane a + b x + "
        "c y fitted from cells of the overlaps (plane; match methods only: BKGLEVEL is "
        "the plane at the image centre, BKGSLPX/BKGSLPY its slopes per pixel)",
    )
    g.add_argument(
        "--pair-stat", choices=PAIR_STATS, default="own",
        help="how two overlapping images' sky difference is measured: each image's own "
        "statistic in the overlap (own, the default, as the JWST step) or the statistic of "
        "the co-located pixel differences (difference: sources and nebulae common to both "
        "cancel; match methods, constant model only)",
    )
    g.add_argument(
        "--bkgerr", action="store_true",
        help="also write BKGERR, the standard error of BKGLEVEL, where it was estimated",
    )
    g.add_argument(
        "--subtract", action="store_true",
        help="subtract the sky from the data of the written files (default: only record "
        "it in the keywords; BKGSUB = F)",
    )
    g.add_argument(
        "--skylist", metavar="FILE",
        help="for --method user: a text file of two white-space separated columns, image "
        "file name and sky value, one line per image ('#' starts a comment); names are "
        "compared whole, then by file stem, then by stem without a JWST suffix such as "
        "_cal or _crf",
    )
    g.add_argument(
        "--stepsize", type=_positive_int, metavar="N",
        help="sample the image edges every N pixels to build the footprints, for "
        "strongly distorted WCS (default: the four corners)",
    )
    g.add_argument(
        "--ungrouped", action="store_true",
        help="give every image its own sky: ignore the group ids of associations and of "
        "JWST exposures",
    )
    s = p.add_argument_group("sky statistic")
    s.add_argument(
        "--stat", choices=STATISTICS, default=_DEFAULT_STAT.statistic,
        help="statistic of the pixel values: mean, median (exact), mode (histogram peak, "
        "refined by a parabola) or midpt (median interpolated in the histogram); "
        "default: %(default)s (the JWST step uses mode)",
    )
    s.add_argument(
        "--lower", type=float, metavar="VALUE",
        help="ignore pixels below this value, in data units (default: no limit)",
    )
    s.add_argument(
        "--upper", type=float, metavar="VALUE",
        help="ignore pixels above this value, in data units, e.g. to keep bright sources "
        "and cosmic rays out (default: no limit)",
    )
    s.add_argument(
        "--nclip", type=int, default=_DEFAULT_STAT.nclip, metavar="N",
        help="number of sigma-clipping iterations, 0 for none (default: %(default)s)",
    )
    s.add_argument(
        "--lsigma", type=float, default=_DEFAULT_STAT.lsigma, metavar="SIGMA",
        help="lower clipping limit, in standard deviations (default: %(default)s)",
    )
    s.add_argument(
        "--usigma", type=float, default=_DEFAULT_STAT.usigma, metavar="SIGMA",
        help="upper clipping limit, in standard deviations (default: %(default)s)",
    )
    s.add_argument(
        "--binwidth", type=float, default=_DEFAULT_STAT.binwidth, metavar="SIGMA",
        help="histogram bin width for mode and midpt, in standard deviations "
        "(default: %(default)s)",
    )
    s.add_argument(
        "--dqbits", type=_dqbits, default=DEFAULT_DQBITS, metavar="BITS",
        help="DQ bits that do NOT make a pixel bad, in astropy bit-mask syntax with the "
        "JWST flag names ('~' means all bits but these; '0' means any flag is bad); "
        "'none' ignores the DQ arrays (default: %(default)s, i.e. a pixel is bad only "
        "when DO_NOT_USE or NON_SCIENCE is set)",
    )
    o = p.add_argument_group("output")
    where = o.add_mutually_exclusive_group()
    where.add_argument(
        "--output-dir", metavar="DIR",
        help="write updated copies of the images, with the same file names, into DIR "
        "(created if needed; an input file is never overwritten this way)",
    )
    where.add_argument(
        "--in-place", action="store_true",
        help="rewrite the input files themselves",
    )
    o.add_argument(
        "--table", metavar="FILE",
        help="also write one row per image (name, group, sky, valid, component, method, "
        "subtracted, local sky) as a table to FILE, in the format of its extension: "
        ".ecsv, .csv, .fits, .html or .txt (aligned columns)",
    )
    o.add_argument(
        "--plot", metavar="FILE",
        help="also draw the image footprints coloured by sky and the overlap graph "
        "coloured by the pair residuals into FILE (PNG, PDF, SVG: by extension; needs "
        "matplotlib, pip install \"skyeq[plot]\"; match methods only)",
    )
    r = p.add_argument_group("running")
    r.add_argument(
        "--threads", type=_positive_int, default=1, metavar="N",
        help="measure and write the images on N threads (the same results; default: "
        "%(default)s)",
    )
    r.add_argument(
        "-v", "--verbose", action="store_true",
        help="log progress and the sky of every image on stderr",
    )
    r.add_argument(
        "--debug", action="store_true",
        help="debug logging, and let errors raise with their traceback",
    )
    return p


def _build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Return the ``skyeq`` parser and its ``match`` sub-parser."""
    parser = _Parser(prog="skyeq", description=skyeq.__doc__)
    parser.add_argument("--version", action="version", version=f"skyeq {skyeq.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    match = _add_match_parser(sub)
    demo = sub.add_parser("demo", help="run skyeq on a built-in synthetic example")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    sub.add_parser(
        "warmup",
        help="compile the numba kernels now (the first use otherwise waits about a minute)",
        description="Compile (or load from numba's cache) every skyeq kernel for float32 "
        "and float64 images, so that the first match does not wait. Run it once after "
        "installing or upgrading skyeq.",
    )
    return parser, match


def _warmup() -> int:
    """Compile or load every kernel; say how long it took and where the cache is."""
    from . import _kernels

    was_warm = _kernels.warm()
    t0 = time.perf_counter()
    _kernels.warmup(parallel=True)  # a cold cache: two processes, one per kernel family
    cache = getattr(_kernels.stats.sky_stat, "_cache", None)  # numba internals
    where = getattr(cache, "_cache_path", None) or "numba's default"
    verb = "loaded" if was_warm else "compiled"
    print(f"skyeq {skyeq.__version__}: kernels {verb} in {time.perf_counter() - t0:.1f} s "
          f"(numba cache: {where})")
    return 0


def _demo(seed: int) -> int:
    """Match a seeded synthetic mosaic with every method; print truth vs recovery."""
    from . import _kernels, synthetic
    from .stats import notice_first_compile

    mosaic = synthetic.tile_grid(3, 4, shape=(1024, 1024), overlap=0.1, seed=seed, noise=1.0)
    # compile or load the kernels first: on a cold cache the statistics kernels for the
    # images' dtype compile in a second process while this one compiles the geometry
    notice_first_compile()
    _kernels.prepare({a.dtype for a in mosaic.data})
    print(f"skyeq {skyeq.__version__}: a 3x4 mosaic of 1024x1024 tiles (10 % overlaps), "
          "noise 1.0, 300 point and 5 extended sources")
    skyeq.match_sky(mosaic.data[:2], mosaic.wcs[:2])  # whatever prepare could not
    stat = skyeq.SkyStat()
    results, seconds = {}, {}
    for method in METHODS[:4]:  # all but "user", which needs a skylist
        t0 = time.perf_counter()
        results[method] = skyeq.match_sky(mosaic.data, mosaic.wcs, method=method, stat=stat)
        seconds[method] = time.perf_counter() - t0
    true_rel = mosaic.sky - mosaic.sky.min()
    header = f"{'image':<13}{'true sky':>10}{'true-min':>10}"
    header += "".join(f"{m:>14}" for m in results)
    print("\n" + header)
    for k, name in enumerate(mosaic.names):
        row = f"{name:<13}{mosaic.sky[k]:>10.3f}{true_rel[k]:>10.3f}"
        row += "".join(f"{r.sky[k]:>14.3f}" for r in results.values())
        print(row)
    err = results["match"].sky - true_rel
    print(f"\nmatch: largest error of the relative skies {np.abs(err - np.median(err)).max():.4f}"
          f" (noise 1.0); times: "
          + ", ".join(f"{m} {t:.2f} s" for m, t in seconds.items()))
    return 0


def _result_lines(result: skyeq.SkyResult) -> list[str]:
    """Return the report of a run: a line per image (name, group, sky, computed), a summary."""
    table = result.to_table()
    names = [str(v) for v in table["name"]]
    groups = [str(v) for v in table["group"]]
    wn = max([5, *map(len, names)])
    wg = max([5, *map(len, groups)])
    lines = [f"{'image':<{wn}}  {'group':<{wg}}  {'BKGLEVEL':>20}  computed"]
    for k in range(len(result)):
        sky = f"{result.sky[k]:.10g}" if result.valid[k] else "-"
        lines.append(f"{names[k]:<{wn}}  {groups[k]:<{wg}}  {sky:>20}  "
                     f"{'yes' if result.valid[k] else 'no (keywords left unchanged)'}")
    nvalid = int(np.count_nonzero(result.valid))
    lines.append(f"method {result.method}, subtracted {result.subtracted}: sky computed for "
                 f"{nvalid} of {len(result)} images, {len(result.components)} connected "
                 f"component(s)")
    return lines


def _check_outputs(args: argparse.Namespace, paths: list[Path]) -> list[Path]:
    """Check every output path before any image is read; return the image targets.

    The image files (`skyeq.io.output_paths`), their directories, ``--table`` (its
    directory, its format from the extension) and ``--plot`` (its directory, its
    format, matplotlib): each must be writable, and no
    two outputs nor an output and an input may be the same file. Nothing is written.
    """
    from . import io

    targets: list[Path] = []
    if args.output_dir is not None or args.in_place:
        targets = io.output_paths(paths, output_dir=args.output_dir, in_place=args.in_place)
        io._check_output_dirs(targets)
    taken = {p.resolve(): f"the input image {p}" for p in paths}
    for t in targets:  # in place, an image is its own output: named as the input
        taken.setdefault(t.resolve(), f"the output image {t}")
    for option, value in (("--table", args.table), ("--plot", args.plot)):
        if value is None:
            continue
        what = f"{option} {value}"
        created = [Path(args.output_dir)] if targets and args.output_dir is not None else []
        if not Path(value).is_dir():  # "is a directory" says more than "no extension"
            if option == "--plot":
                _plot_format(value)
            else:
                io._table_format(value, what)
        real = io._check_output_file(value, what, created).resolve()
        if real in taken:
            raise ValueError(f"{what} would overwrite {taken[real]}")
        taken[real] = what
    return targets


def _plot_format(path: str) -> str:
    """Return the image format of a --plot file, from its extension (none: PNG).

    Raises ImportError without matplotlib, ValueError for a format it cannot write.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise ImportError('--plot needs matplotlib: pip install "skyeq[plot]"') from None
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    known = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in known:
        raise ValueError(f"--plot {path}: unknown image format {fmt!r} (matplotlib writes "
                         f"{', '.join(sorted(known))})")
    return fmt


def _run_match(args: argparse.Namespace) -> list[str]:
    """Run ``skyeq match`` with parsed arguments; return the lines to print.

    Everything that can be checked cheaply (inputs, every output path) fails before any
    image is read. The image files, the table and the plot are then replaced together
    or not at all (an error or an interruption leaves every file as it was), and only
    then is anything printed: a closed standard output cannot lose an output file.
    Errors propagate.
    """
    from . import io

    paths, _ = io.collect_inputs(args.inputs)
    targets = _check_outputs(args, paths)
    skylist = io.read_skylist(args.skylist) if args.skylist is not None else None
    executor = ThreadPoolExecutor(args.threads) if args.threads > 1 else None
    options = {"groups": None} if args.ungrouped else {}
    batch = io._Batch()
    try:
        result = io.match_files(
            args.inputs, method=args.method, stat=args.skystat, match_down=args.match_down,
            anchor=args.anchor, robust=args.robust, model=args.model,
            pair_stat=args.pair_stat,
            subtract=args.subtract, skylist=skylist,
            stepsize=args.stepsize, dqbits=args.dqbits, executor=executor, **options,
        )
        lines = _result_lines(result)
        if targets:
            io._stage_results(batch, result, paths, output_dir=args.output_dir,
                              in_place=args.in_place, executor=executor,
                              errors=args.bkgerr)
        if args.table is not None:
            fmt = io._table_format(args.table)
            batch.stage(args.table, lambda tmp: io._write_table(result, tmp, fmt))
            batch.note("wrote the table of %d images to %s", len(result), args.table)
        if args.plot is not None:
            _stage_plot(batch, result, args.plot)
        batch.commit()
    finally:
        if executor is not None:
            executor.shutdown()  # first: no task may still be writing a temporary file
        batch.abort()  # nothing left to do after a commit
    if targets:
        where = "in place" if args.in_place else f"to {args.output_dir}"
        lines.append(f"wrote {len(targets)} file(s) {where}")
    else:
        lines.append("no image file written (use --output-dir DIR or --in-place)")
    if args.table is not None:
        lines.append(f"wrote the table to {args.table}")
    if args.plot is not None:
        lines.append(f"wrote the plot to {args.plot}")
    return lines


def _stage_plot(batch: io._Batch, result: skyeq.SkyResult, path: str) -> None:
    """Draw `SkyResult.plot` into the temporary file of ``path`` in ``batch``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fmt = _plot_format(path)
    fig = result.plot()
    try:
        batch.stage(path, lambda tmp: fig.savefig(tmp, format=fmt))
    finally:
        plt.close(fig)
    batch.note("wrote the plot to %s", path)


def _print_lines(lines: list[str]) -> None:
    """Print ``lines`` on stdout; a reader that stopped reading (EPIPE) is no error.

    ``skyeq match ... | head -1``: every output file is already written. After a
    broken pipe, stdout is pointed at the null device so that the interpreter's final
    flush does not fail again (the recipe of the Python documentation, signal module).
    """
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at the null device after a broken pipe (see `_print_lines`)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def _check_match_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Reject option combinations that cannot work (usage errors)."""
    if args.method == "user" and args.skylist is None:
        parser.error("--method user needs --skylist FILE")
    if args.method != "user" and args.skylist is not None:
        parser.error("--skylist is only used with --method user")
    if args.plot is not None and "match" not in args.method:
        parser.error("--plot needs a match method (match or global+match): only they "
                     "compute the footprints")
    try:
        args.skystat = skyeq.SkyStat(
            args.stat, lower=args.lower, upper=args.upper, nclip=args.nclip,
            lsigma=args.lsigma, usigma=args.usigma, binwidth=args.binwidth,
        )
    except (TypeError, ValueError) as err:
        parser.error(str(err))


def _one_line(err: BaseException) -> str:
    """Describe an exception in one line."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.strerror}: {err.filename}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _setup_logging(verbose: bool, debug: bool) -> tuple[logging.Logger, logging.Handler, int]:
    """Send skyeq's log records to stderr (warnings; more with -v or --debug)."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logger = logging.getLogger("skyeq")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("skyeq: %(levelname)s: %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    return logger, handler, old_level


def main(argv: list[str] | None = None) -> int:
    """Run the ``skyeq`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name. Default: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code: 0 success, 1 runtime failure, 2 usage error, 130 interrupted.
    """
    parser, match_parser = _build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        if args.command == "match":
            _check_match_args(args, match_parser)
    except _UsageError:
        return 2
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    if args.command == "warmup":
        return _warmup()
    if args.command == "demo":
        try:
            return _demo(args.seed)
        except BrokenPipeError:  # skyeq demo | head
            _silence_stdout()
            return 0
    logger, handler, old_level = _setup_logging(args.verbose, args.debug)
    try:
        _print_lines(_run_match(args))
        return 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write("skyeq: interrupted\n")
        return 130
    except Exception as err:
        if args.debug:
            raise
        sys.stderr.write(f"skyeq: error: {_one_line(err)}\n")
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
