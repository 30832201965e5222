"""``cowctx record`` and ``cowctx replay``: a real program's address-space story, recorded
on the kernel and replayed on every design."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cowctx.cli.options import EXIT_BAD_INPUT as EXIT_MALFORMED
from cowctx.cli.options import EXIT_FAIL as EXIT_DIFFER
from cowctx.cli.options import EXIT_OK, design_option, json_option, parse_designs

EXIT_FLAGGED = 3
"""The recording is not exactly replayable (its ``flags`` say why)."""


@click.command("record", context_settings={"ignore_unknown_options": True})
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=Path("cowctx.trace"),
    show_default=True,
    help="Trace file to write.",
)
@click.option("--buffer-kb", type=int, default=4096, show_default=True, help="Ring buffer per CPU.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def record_command(out: Path, buffer_kb: int, cmd: tuple[str, ...]) -> None:
    """Run CMD (and every process it starts) under recording: needs root and tracefs.

    Writes one trace file (docs/trace-format.md).  Exit status: 0 recorded (the
    file's `flags` may still say why it is not exactly replayable), 2 the command
    or tracefs could not be used, 128+N interrupted by signal N (SIGINT, SIGTERM,
    SIGHUP: nothing written, nothing left running or enabled).
    """
    from cowctx.linux.tracefs import TraceError
    from cowctx.trace import traceformat
    from cowctx.trace.recorder import Interrupted, record, recording_unavailable_reason

    reason = recording_unavailable_reason()
    if reason is not None:
        click.echo(f"cowctx record: {reason}", err=True)
        sys.exit(EXIT_MALFORMED)

    def note(msg: str) -> None:
        click.echo(msg, err=True)

    try:
        rec = record(list(cmd), buffer_kb=buffer_kb, progress=note)
    except Interrupted as exc:
        click.echo(f"cowctx record: interrupted by {exc}; nothing written", err=True)
        sys.exit(128 + exc.signum)
    except (TraceError, FileNotFoundError, PermissionError) as exc:
        click.echo(f"cowctx record: {exc}", err=True)
        sys.exit(EXIT_MALFORMED)
    traceformat.write(out, rec)
    h = rec.header
    note(
        f"wrote {out}: {h['events']} events, {len(h['images'])} images, "
        f"command exit status {h['exit_status']}"
    )
    for flag in h["flags"]:
        note(f"flagged: {flag}")


@click.command("replay")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@design_option("all")
@json_option("One JSON result per design.")
def replay_command(file: Path, design: str, as_json: bool) -> None:
    """Replay a recording on the model's designs and compare with the kernel's counts.

    Exit status: 0 the anon_vma design's anon_vma and anon_vma_chain
    allocated/freed/live equal the recording's, 1 they differ (the first
    difference is printed), 2 malformed file, 3 the recording is flagged as not
    exactly replayable.
    """
    from cowctx.trace import traceformat
    from cowctx.trace.replay import ReplayError, replay

    try:
        rec = traceformat.read(file)
    except traceformat.TraceFormatError as exc:
        click.echo(f"cowctx replay: {exc}", err=True)
        sys.exit(EXIT_MALFORMED)
    designs = parse_designs(design)
    if "anon_vma" not in designs:
        designs = ["anon_vma", *designs]
    results = []
    for name in designs:
        if len(rec.records) > 50_000 and not as_json:
            click.echo(f"replaying {len(rec.records)} records on {name}...", err=True)
        try:
            results.append(replay(rec, name, source=str(file)))
        except ReplayError as exc:
            click.echo(f"cowctx replay: {exc}", err=True)
            sys.exit(EXIT_MALFORMED)
    reference = next(r for r in results if r["design"] == "anon_vma")
    shown = [r for r in results if r["design"] in parse_designs(design)]
    for r in shown:
        if as_json:
            click.echo(json.dumps(r, sort_keys=True))
        else:
            _print(r)
    flags = rec.header["flags"]
    if flags:
        click.echo(f"{file}: recording is not exactly replayable:", err=True)
        for f in flags:
            click.echo(f"  {f}", err=True)
        sys.exit(EXIT_FLAGGED)
    if not reference["agree"]:
        first = reference["first_difference"]
        click.echo(f"{file}: anon_vma design differs from the kernel: {first}", err=True)
        sys.exit(EXIT_DIFFER)
    sys.exit(EXIT_OK)


def _print(r: dict[str, object]) -> None:
    kernel = r["kernel"]
    objects = r["final"]["objects"]  # type: ignore[index]
    click.echo(f"{r['scenario']} on {r['design']}:")
    for kind in ("anon_vma", "anon_vma_chain"):
        k = kernel[kind]  # type: ignore[index]
        line = f"  kernel {kind}: allocated {k['allocated']} freed {k['freed']} live {k['live']}"
        click.echo(line)
    for kind, s in sorted(objects.items()):
        click.echo(
            f"  model  {kind}: allocated {s['allocated']} freed {s['freed']} live {s['live']}"
        )
    if r["design"] == "anon_vma":
        click.echo(f"  agree: {r['agree']}")
