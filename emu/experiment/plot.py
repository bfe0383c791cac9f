"""The reclaim experiment as a picture: per protocol x rate the CDF of
reclaim's decision to the free list (log time axis), and beside each refcount
line its expected wait, half the pass length, as a dashed line of its colour.
matplotlib is the optional extra `pip install .[plot]`."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from .reclaim import Measured, Plan

FORMATS = (".png", ".svg", ".pdf")
INSTALL_HINT = "pip install 'ksm-emu[plot]' (or: pip install matplotlib)"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(plan: Plan, results: list[Measured], out: Path | BinaryIO, fmt: str | None = None) -> None:
    """Draw into `out`, a path or an open binary file (then `fmt`: png, svg or pdf)."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=90)
    shades = {p: plt.get_cmap(c) for p, c in (("keyhole", "Blues"), ("refcount", "Oranges"))}
    rates = sorted(plan.rates)
    for m in results:
        r = m.row
        if not len(m.cdf):
            continue
        shade = 0.45 + 0.5 * rates.index(r["pages_to_scan"]) / max(1, len(rates) - 1)
        color = shades.get(r["protocol"], plt.get_cmap("Greys"))(shade)
        ax.step(m.cdf_us, m.cdf, where="post", color=color, lw=1.6,
                label=f"{r['protocol']}, {r['pages_to_scan']}/{r['sleep_ms']:g} ms (n={r['n']})")
        if r["protocol"] == "refcount":
            ax.axvline(r["pass_s"] / 2 * 1e6, color=color, ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("reclaim's decision to the free list (us, log)")
    ax.set_ylabel("fraction of freed KSM pages")
    ax.set_title(f"KSM page reclaim: keyhole vs refcount, {plan.pages} pages, ksmd pages_to_scan per "
                 f"{plan.sleep_ms:g} ms\n(dashed: refcount's expected wait, half of ksmd's pass)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="center")  # the empty middle between the two families
    fig.tight_layout()
    fig.savefig(out, format=fmt)
    plt.close(fig)
