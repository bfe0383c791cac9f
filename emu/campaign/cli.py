"""ksm-emu campaign SPEC: argument parsing, the resumable loop and the end table."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..cliutil import (
    UserError,
    check_output_path,
    number,
    printable,
    read_regular_file,
    stop_signals_interrupt,
)

MAX_SPEC_BYTES = 1 << 20
SHOWN_REPLAYS = 5


def add_parsers(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "campaign", help="many explore and run jobs (configs x protocols x scenarios x seeds), locally or on Dask",
        description="Run every job of SPEC (a JSON file; --example prints one) on a local process pool or a "
                    "Dask cluster; each finished job is appended to --out as a JSON line, and a re-run skips "
                    "the jobs already there. Ends with a Markdown table of verdicts beside ksm-layout "
                    "hazard's static ones. Exit 0 when every job ran (violations are findings, not "
                    "failures), 1 if a job errored or a static and a dynamic verdict disagree.")
    c.add_argument("spec", nargs="?", metavar="SPEC", help="the campaign, JSON (see --example and the README)")
    c.add_argument("--example", action="store_true", help="print a small SPEC (10 jobs, about 15 s on 2 cores)")
    c.add_argument("--jobs", type=number, metavar="N",
                   help=f"local worker processes (default: the CPUs here, {os.cpu_count()})")
    c.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the jobs on this Dask scheduler's workers instead (pip install 'ksm-emu[dask]'; "
                        "start one with `dask scheduler`, workers with `dask worker tcp://HOST:8786 --nthreads 1`)")
    c.add_argument("--out", metavar="FILE",
                   help="the results, JSON lines appended as jobs finish (default: SPEC's name with "
                        ".results.jsonl, beside it); locked while the campaign runs, and never another "
                        "SPEC's results or a file that is not a results file; errored jobs run again")
    c.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    c.set_defaults(func=cmd_campaign)


def _read_spec(path: str) -> str:
    try:
        return read_regular_file(path, MAX_SPEC_BYTES, "a campaign SPEC").decode()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def default_out(spec: str) -> Path:
    p = Path(spec)
    return p.with_name(p.stem + ".results.jsonl")


def cmd_campaign(args: argparse.Namespace) -> int:
    from .spec import SpecError, example, parse

    if args.example:
        if args.spec or args.scheduler is not None or args.out or args.jobs is not None:
            raise UserError("--example prints a SPEC and takes no other argument")
        sys.stdout.write(example())
        return 0
    if not args.spec:
        raise UserError("want a SPEC file (ksm-emu campaign --example > campaign.json to start)")
    if args.jobs is not None and not 1 <= args.jobs <= 1024:
        raise UserError(f"--jobs {args.jobs}: want 1..1024")
    if args.scheduler is not None and not args.scheduler.strip():
        raise UserError("--scheduler '': want tcp://HOST:PORT (leave --scheduler out to run here)")
    if args.jobs is not None and args.scheduler:
        raise UserError("--jobs is for the local pool; with --scheduler the Dask workers run the jobs")
    try:
        jobs = parse(_read_spec(args.spec))
    except SpecError as e:
        raise UserError(f"{args.spec}: {e}") from None
    out = Path(args.out) if args.out else default_out(args.spec)
    check_output_path(out, "--out")
    if os.path.exists(out) and os.path.samefile(out, args.spec):
        raise UserError(f"--out {out}: that is the SPEC; results go to a file of their own")
    _results_file_or_new(out, jobs)
    stop_signals_interrupt()
    client = None
    if args.scheduler is not None:
        from .executors import SchedulerError, connect

        try:
            client = connect(args.scheduler)
        except SchedulerError as e:
            raise UserError(str(e)) from None
    try:
        return _campaign(args, jobs, out, client)
    finally:
        if client is not None:
            client.close()


def _results_file_or_new(out: Path, jobs: list[dict]) -> None:
    """An existing --out must be a results file (its first line a job's record),
    never some other file that results would be appended to, nor the results
    of another SPEC (not one of its records a job of this one)."""
    from .spec import key
    from .store import done, well_formed

    try:
        with open(out, "rb") as f:
            first = f.readline(1 << 20)
    except FileNotFoundError:
        return
    except OSError as e:
        raise UserError(f"--out {out}: {e.strerror}") from None
    try:
        ok = well_formed(json.loads(first))
    except (ValueError, RecursionError):
        # empty: new; one torn line (no newline) that began as a record of ours
        # (json.dumps(sort_keys=True): "detail" first) and does not parse: resumable
        ok = not first or (not first.endswith(b"\n") and first.startswith(b'{"detail": {'))
    if not ok:
        raise UserError(f"--out {out}: exists and is not a campaign's results file; not appending to it")
    records, _ = done(out)
    keys = {key(j) for j in jobs}
    if records and not keys & set(records):
        raise UserError(f"--out {out}: the results of another SPEC (none of its {len(records)} jobs is in this "
                        "one); give this SPEC a --out of its own")


def _campaign(args: argparse.Namespace, jobs: list[dict], out: Path, client) -> int:
    from ..progress import bar
    from . import executors, store
    from .spec import key
    from .table import markdown, rows

    try:  # one campaign at a time per results file: a second would run every job again
        appender = store.Appender(out)
    except store.Busy:
        raise UserError(f"--out {out}: another campaign is writing it; wait for it or give another --out") from None
    before, unreadable = store.done(out)
    keys = [key(j) for j in jobs]
    errored = sum(1 for k in keys if k in before and before[k]["verdict"] == "error")
    before = {k: r for k, r in before.items() if r["verdict"] != "error"}  # an errored job runs again
    todo = [j for j, k in zip(jobs, keys) if k not in before]
    if errored:
        sys.stderr.write(f"ksm-emu: {errored} job(s) that errored last time run again\n")
    if unreadable:
        sys.stderr.write(f"ksm-emu: {out}: {unreadable} unreadable line(s) skipped (a torn write); "
                         "their jobs run again\n")
    records = {k: before[k] for k in keys if k in before}
    b = bar(len(jobs), "campaign", "job", not args.no_progress)
    b.update(len(records))
    n = args.jobs or os.cpu_count() or 1
    where = f"Dask at {args.scheduler}" if client is not None else f"{n} local worker{'s' * (n != 1)}"
    interrupted = False
    try:
        if todo:
            results = (executors.dask(todo, client) if client is not None
                       else executors.local(todo, n, close=(appender.fd,)))
            for rec in results:
                appender.add(rec)
                records[key(rec["job"])] = rec
                b.update(1)
                b.set_postfix_str(f"{rec['verdict']} {rec['job']['kind']} on {rec['worker']}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        b.close()
        appender.close()
    ran = len(records) - (len(jobs) - len(todo))
    done = [records[k] for k in keys if k in records]
    if interrupted:
        sys.stderr.write(f"ksm-emu: interrupted: {len(done)} of {len(jobs)} jobs done, in {out}; "
                         "run the same command again to finish the others\n")
        return 130
    print(f"campaign: {len(jobs)} jobs, {ran} run now on {where}, {len(jobs) - len(todo)} already in {out}")
    print()
    print(markdown(done))
    fails = [r for r in done if r["verdict"] == "violation" and r["replay"]]
    if fails:
        print()
        for r in fails[:SHOWN_REPLAYS]:  # well_formed: a replay string is shell-safe
            print(f"replay: ksm-emu replay {r['replay']}")
        if len(fails) > SHOWN_REPLAYS:
            print(f"(and {len(fails) - SHOWN_REPLAYS} more replay strings in {out})")
    errors = [r for r in done if r["verdict"] == "error"]
    for r in errors[:SHOWN_REPLAYS]:
        sys.stderr.write(f"ksm-emu: job failed: {printable(r['detail'].get('error'))}\n")
    disagree = [r for r in rows(done) if r["agree"] == "NO"]
    return 1 if errors or disagree else 0
