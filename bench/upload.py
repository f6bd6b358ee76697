"""Upload of a 1 GiB artifact: web process memory growth, and time against sha256sum.

    python bench/upload.py [--size-mib 1024] [--keep]

What it does, in one run on a fresh database (``modelhub_bench_upload``):

* writes a 1 GiB artifact to a scratch folder: a zip (``ZIP_STORED``) holding
  ``1/model.py`` and a 1 GiB ``1/weights.bin`` of incompressible bytes (a
  random MiB, rotated and stamped with a counter for every MiB);
* starts ModelHub under gunicorn (1 worker, 4 threads) on a loopback port,
  with its artifact storage and upload temp folder in the scratch folder;
* makes an upload-scoped API token with ``manage.py create_api_token``;
* uploads a tiny artifact first (so the worker has imported everything an
  upload needs), then samples the RSS of the gunicorn master and its worker
  (summed; every 50 ms, psutil) while ``curl`` streams the 1 GiB artifact from
  disk to ``POST /api/v1/models/bench-upload/versions/``;
* times ``sha256sum`` of the same file before and after the upload (the file
  is in the page cache for all three reads) and takes the faster.

Last line: ``upload_rss_growth_mib`` (peak RSS during the upload minus the RSS
just before it) and ``upload_vs_sha256`` (upload wall time over sha256sum wall
time), then the raw seconds. Targets: <= 100 MiB and <= 3.

The scratch folder needs about 3.5 GiB of disk (the artifact, the server's
upload temp file and the stored copy): set BENCH_TMPDIR to put it elsewhere
than the system temp folder (not a small tmpfs). Everything is removed at the
end, the database included, unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DOUBLER_MANIFEST,
    DOUBLER_MODEL_PY,
    WebServer,
    api_available,
    bench_env,
    create_token,
    create_user,
    log,
    migrate,
    report,
    scratch_database,
    setup_django,
    workdir,
)

MIB = 1024 * 1024
MODEL = "bench-upload"


def write_big_artifact(path: Path, size_mib: int) -> None:
    """A zip (stored, not deflated) with 1/model.py and a size_mib MiB 1/weights.bin."""
    base = os.urandom(MIB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("1/model.py", DOUBLER_MODEL_PY.format(factor=2))
        with zf.open("1/weights.bin", "w", force_zip64=True) as out:
            for i in range(size_mib):
                k = (i * 4099) % MIB
                out.write(i.to_bytes(16, "little") + base[k + 16 :] + base[:k] if k else base)


def write_small_artifact(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("1/model.py", DOUBLER_MODEL_PY.format(factor=3))


class RssSampler(threading.Thread):
    """Sum of RSS over the web server's processes, sampled every `interval` s."""

    def __init__(self, server: WebServer, interval: float = 0.05):
        super().__init__(daemon=True)
        self.server, self.interval = server, interval
        self.samples: list[int] = []
        self._halt = threading.Event()

    def sample(self) -> int:
        import psutil

        total = 0
        for proc in self.server.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(self.sample())
            self._halt.wait(self.interval)

    def stop(self) -> int:
        """Stop sampling; return the peak."""
        self._halt.set()
        self.join()
        self.samples.append(self.sample())
        return max(self.samples)


def curl_upload(url: str, auth_header: Path, artifact: Path, manifest: Path, out: Path) -> tuple[int, float]:
    """POST the artifact with curl (streams it from disk). Returns (HTTP status, seconds)."""
    cmd = [
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "-o",
        str(out),
        "-w",
        "%{http_code}",
        "-H",
        f"@{auth_header}",
        "-F",
        f"artifact=@{artifact}",
        "-F",
        f"manifest=<{manifest}",
        f"{url}/api/v1/models/{MODEL}/versions/",
    ]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"curl failed ({done.returncode}): {done.stderr}")
    return int(done.stdout.strip() or 0), elapsed


def time_sha256sum(path: Path) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return done.stdout.split()[0], time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of weights.bin (default 1024 = 1 GiB)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and the database")
    args = parser.parse_args()
    if shutil.which("curl") is None or shutil.which("sha256sum") is None:
        print("upload: needs curl and sha256sum on PATH", file=sys.stderr)
        return 1

    with workdir("upload", keep=args.keep) as tmp:
        free = shutil.disk_usage(tmp).free
        if free < 4 * args.size_mib * MIB:
            print(f"upload: {tmp} has {free / MIB:.0f} MiB free; set BENCH_TMPDIR to a roomier disk", file=sys.stderr)
            return 1
        with scratch_database("modelhub_bench_upload", keep=args.keep) as db:
            return run(tmp, db, args)


def run(tmp: Path, db: str, args: argparse.Namespace) -> int:
    (tmp / "upload-tmp").mkdir()
    env = bench_env(
        db,
        tmp / "var",
        MODELHUB_UPLOAD_TEMP_DIR=str(tmp / "upload-tmp"),
        # Room for the artifact whatever the defaults become.
        MODELHUB_MAX_ARTIFACT_BYTES=str(max(8 * 1024 * MIB, 2 * args.size_mib * MIB)),
        MODELHUB_MAX_UNPACKED_BYTES=str(max(16 * 1024 * MIB, 2 * args.size_mib * MIB)),
    )
    setup_django(env)
    migrate()
    if not api_available():
        print("upload: the REST API (manage.py create_api_token) does not exist yet", file=sys.stderr)
        return 1
    create_user("bench")
    token = create_token("bench", scopes="read,upload", name="bench-upload")
    from django.db import connections

    connections.close_all()

    auth = tmp / "auth-header"
    auth.write_text(f"Authorization: Bearer {token}\n")
    manifest = tmp / "manifest.json"
    manifest.write_text(json.dumps(DOUBLER_MANIFEST))
    small, big = tmp / "small.zip", tmp / "big.zip"
    write_small_artifact(small)
    log(f"writing a {args.size_mib} MiB artifact")
    started = time.perf_counter()
    write_big_artifact(big, args.size_mib)
    log(f"wrote {big.stat().st_size / MIB:.0f} MiB in {time.perf_counter() - started:.1f} s")

    expected_sha, sha_before = time_sha256sum(big)
    log(f"sha256sum: {sha_before:.2f} s")

    with WebServer(env, tmp / "gunicorn.log") as server:
        status, warm = curl_upload(server.url, auth, small, manifest, tmp / "small-response.json")
        if status != 201:
            body = (tmp / "small-response.json").read_text(errors="replace")
            raise RuntimeError(f"warm-up upload answered HTTP {status}: {body}\n{server.log_tail()}")
        log(f"warm-up upload (tiny artifact): {warm * 1000:.0f} ms")
        time.sleep(0.5)
        sampler = RssSampler(server)
        baseline = sampler.sample()
        sampler.start()
        status, upload_s = curl_upload(server.url, auth, big, manifest, tmp / "big-response.json")
        peak = sampler.stop()
        body = (tmp / "big-response.json").read_text(errors="replace")
        if status not in (200, 201):
            raise RuntimeError(f"upload answered HTTP {status}: {body}\n{server.log_tail()}")
        answer = json.loads(body)
        if answer.get("sha256") != expected_sha:
            raise RuntimeError(f"the server's sha256 {answer.get('sha256')} is not sha256sum's {expected_sha}")
        log(
            f"upload: HTTP {status} in {upload_s:.2f} s ({args.size_mib / upload_s:.0f} MiB/s), version "
            f"{answer.get('number')}; RSS {baseline / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB "
            f"({len(sampler.samples)} samples)"
        )

    _, sha_after = time_sha256sum(big)
    sha_s = min(sha_before, sha_after)
    log(f"sha256sum: {sha_after:.2f} s after the upload; using {sha_s:.2f} s")
    big.unlink()
    report(
        upload_rss_growth_mib=(peak - baseline) / MIB,
        upload_vs_sha256=upload_s / sha_s,
        upload_s=upload_s,
        sha256sum_s=sha_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
