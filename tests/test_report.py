"""The HTML report opened in headless Chromium: no console error, the tables
there, every image loaded and non-empty.  `make report-check` also saves a
screenshot (--screenshot PATH)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cowctx.report.compare import compare
from cowctx.report.html import write_report
from cowctx.report.recording import compare_recording
from cowctx.report.sweep import sweep
from cowctx.trace import traceformat
from cowctx.workloads import build_workload

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]

PROBE = """<script>
window.cowctxErrors = [];
window.addEventListener('error', e => window.cowctxErrors.push(String(e.message || e.type)),
                        true);
const origError = console.error;
console.error = (...a) => { window.cowctxErrors.push(a.join(' ')); origError(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]);
  const tables = [...document.querySelectorAll('table')].map(t => t.rows.length);
  const out = document.createElement('pre');
  out.id = 'cowctx-probe';
  out.textContent = JSON.stringify({errors: window.cowctxErrors, imgs, tables});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    designs = ["anon_vma", "cow_context", "cow_context_poc"]
    comparisons = [
        compare(build_workload(name, scale=0.05), designs)
        for name in ("fork-chain", "mremap-realloc")
    ]
    # a real program's row (a committed recording) renders like the workloads'
    trace = Path(__file__).parent / "fixtures" / "traces" / "sh-pipeline.trace"
    comparisons.append(compare_recording(traceformat.read(trace), str(trace), designs))
    swept = sweep(
        "prefork",
        "workers",
        [2, 4],
        ["anon_vma", "cow_context"],
        fixed={"heap_pages": 64},
        workers=1,
    )
    write_report(path, comparisons, [swept])
    return path


def test_report_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert "<table>" in text and "What each number counts" in text
    assert not re.search(r'src="(?!data:)', text), "every image is embedded"
    assert text.count("data:image/png;base64,") >= 3 * 3 + 1


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (make test installs it when it can)",
)
def test_report_renders_in_chromium(
    report: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    assert CHROMIUM is not None
    proc = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<pre id="cowctx-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, "the page never finished loading"
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    assert probe["errors"] == []
    console_errors = [
        line
        for line in proc.stderr.splitlines()
        if "CONSOLE" in line and ("Error" in line or "error" in line)
    ]
    assert console_errors == []
    assert len(probe["tables"]) == 3 and all(rows > 20 for rows in probe["tables"])
    assert len(probe["imgs"]) >= 10
    assert all(done and w > 0 and h > 0 for done, w, h in probe["imgs"])
    shot = request.config.getoption("--screenshot")
    if shot:
        subprocess.run(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={tmp_path / 'shot'}",
                "--window-size=1280,4000",
                f"--screenshot={Path(shot).resolve()}",
                report.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
        assert Path(shot).stat().st_size > 10_000
