"""Bit-identity of the skies across a change: save them before, compare after.

Run from the repository root::

    python -m benchmarks identity --save /tmp/before.npz     # on the old code
    python -m benchmarks identity --compare /tmp/before.npz  # on the new code

Matches five ``match`` benchmark mosaics (`CASES`: 6x6 tiles, 8 dithers, the NIRCam gwcs, ACS
SIP and TAN 6-dither layouts; see ``python -m benchmarks match --help``) with the
methods ``local``, ``global``, ``match`` and ``global+match`` and the statistics
``median`` and ``mode``, and stores every ``sky`` (and ``local``) array: 70 arrays.
``--compare`` reports each array that is not bit-identical (NaN equal to NaN) and by
how much, and exits 1 if any differs. A SHA-256 digest of each mosaic's images is saved
too: the synthetic mosaics are drawn through skyeq's own WCS code, so a change there can
move a few pixels by one float32 step, and the report then says that the skies of that
mosaic were computed on other inputs. To save the skies of an older commit with this
script, make a directory holding only a link to the old ``skyeq`` package and put it
first on the path, run from outside the repository (the header says which ``skyeq``
was imported)::

    git worktree add /tmp/old OLD_COMMIT && mkdir /tmp/oldpkg
    ln -s /tmp/old/skyeq /tmp/oldpkg/skyeq
    cd /tmp && PYTHONPATH=/tmp/oldpkg:$REPO python -m benchmarks identity --save before.npz
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np

from .bench_match import _mosaic

#: The ``match`` mosaics compared (fixed, so that saved files stay comparable).
CASES = ("6x6", "dithers8", "realwcs", "sip", "tan6")
METHODS = ("local", "global", "match", "global+match")
STATS = ("median", "mode")


#: Key prefix of the input digests in a saved file.
INPUT = "input:"


def skies() -> dict[str, np.ndarray]:
    """Every sky array of the benchmark mosaics, keyed ``case-method-stat[-local]``.

    Also ``input:case``: the SHA-256 digest of the mosaic's images (uint8 array).
    """
    import skyeq

    out = {}
    for case in CASES:
        m = _mosaic(case)
        digest = hashlib.sha256()
        for d in m.data:
            digest.update(np.ascontiguousarray(d).tobytes())
        out[INPUT + case] = np.frombuffer(digest.digest(), dtype=np.uint8)
        for meth in METHODS:
            for stat in STATS:
                r = skyeq.match_sky(m.data, m.wcs, method=meth, stat=skyeq.SkyStat(stat))
                out[f"{case}-{meth}-{stat}"] = r.sky
                if r.local is not None:
                    out[f"{case}-{meth}-{stat}-local"] = r.local
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks identity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--save", metavar="FILE", help="write the skies to FILE (.npz)")
    what.add_argument("--compare", metavar="FILE", help="compare with the skies in FILE")
    args = parser.parse_args(argv)
    import skyeq

    print(f"skyeq {skyeq.__version__} from {skyeq.__file__}")
    now = skies()
    if args.save:
        np.savez(args.save, **now)
        print(f"saved {sum(not k.startswith(INPUT) for k in now)} arrays to {args.save}")
        return 0
    with np.load(args.compare) as before:
        saved = {k: before[k] for k in before.files}
    unknown = [c for c in CASES if INPUT + c not in saved]
    moved = [c for c in CASES if c not in unknown
             and not np.array_equal(saved[INPUT + c], now[INPUT + c])]
    keys = sorted((set(saved) | set(now)) - {INPUT + c for c in CASES})
    differ = {k: _difference(saved.get(k), now.get(k)) for k in keys
              if k not in saved or k not in now
              or not np.array_equal(saved[k], now[k], equal_nan=True)}
    print(f"{len(keys) - len(differ)} of {len(keys)} arrays bit-identical")
    if unknown:
        print(f"  inputs not known (no digest saved): {', '.join(unknown)}")
    for case in moved:
        print(f"  inputs of {case}: other images than when saved")
    for k, how in differ.items():
        case = k.split("-")[0]
        note = (" (other inputs)" if case in moved
                else " (inputs not known)" if case in unknown else "")
        print(f"  differs: {k}: {how}{note}")
    return 1 if differ else 0


def _difference(before: np.ndarray | None, now: np.ndarray | None) -> str:
    """Say how two sky arrays differ: the largest absolute and relative difference."""
    if before is None or now is None:
        return "only in " + ("the new run" if before is None else "the saved file")
    if before.shape != now.shape:
        return f"shape {before.shape} -> {now.shape}"
    if not np.array_equal(np.isnan(before), np.isnan(now)):
        return "NaN in other places"
    d = np.abs(np.where(np.isnan(before), 0.0, before - now))
    scale = np.nanmax(np.abs(before)) if np.any(np.isfinite(before)) else 0.0
    return f"max |diff| {d.max():.2g} (relative {d.max() / scale if scale else np.inf:.2g})"
