"""Prints a bench's ratio line: the median over rounds of the per-round ratio, and every round's ratio with
their spread, so a noisy round shows. Each round ran both sides back to back (alternating which went first),
so a per-round ratio compares two runs made under the same machine conditions.

    python3 bench/ratio.py NAME NUMERATORS DENOMINATORS [--goal '<=0.8'] [--digits 3]

NUMERATORS and DENOMINATORS: one value per round, comma- or space-separated, in the same order. Output:

    ratio NAME: 0.934x (rounds 0.921 0.934 0.951; spread 0.921..0.951) goal <= 0.8x: NOT met

bench/smoke.sh (run by CI) fails a bench that prints no `ratio ` line. Exit status 1 on bad input (no
rounds, a different count on each side, a figure of 0 or below): a bench never prints a ratio it could not
compute.
"""

import argparse
import operator
import statistics
import sys


def values(s):
    return [float(x) for x in s.replace(",", " ").split()]


def ratio_line(name, num, den, goal=None, digits=3):
    """The line for per-round values `num` and `den` (same order); raises ValueError on bad input."""
    if not num or len(num) != len(den):
        raise ValueError(f"{name}: {len(num)} numerators and {len(den)} denominators; give one of each per round")
    if any(x <= 0 for x in num + den):
        # A cost or a rate is positive: zero means a side measured nothing, below zero that its figure is
        # inside the noise (a difference of two runs).
        raise ValueError(f"{name}: a figure is 0 or below ({num} / {den}): a side measured nothing, or less than "
                         f"its noise; check that side's output, or lengthen the run")
    r = [n / d for n, d in zip(num, den)]
    f = lambda x: f"{x:.{digits}f}"
    line = f"ratio {name}: {f(statistics.median(r))}x (rounds {' '.join(map(f, r))}; spread {f(min(r))}..{f(max(r))})"
    if goal:
        op, limit = (operator.le, goal[2:]) if goal.startswith("<=") else (operator.ge, goal[2:])
        line += f" goal {goal[:2]} {limit}x: {'met' if op(statistics.median(r), float(limit)) else 'NOT met'}"
    return line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("num")
    ap.add_argument("den")
    ap.add_argument("--goal", help="e.g. '<=0.8' or '>=0.8': printed as met / NOT met")
    ap.add_argument("--digits", type=int, default=3)
    a = ap.parse_args()
    try:
        print(ratio_line(a.name, values(a.num), values(a.den), a.goal, a.digits))
    except ValueError as e:
        sys.exit(f"ratio.py: {e}")


if __name__ == "__main__":
    main()
