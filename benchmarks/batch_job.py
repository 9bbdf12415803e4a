"""``inferd batch`` on the demo MLP (FP32 512 -> 2048 -> 2048 -> 10) over Parquet, in one run.

    .venv/bin/python -m benchmarks.batch_job [--rows 1000000] [--small-rows 100000]
                                             [--kill-rows 400000] [--kills 5] [--only ...]

Parts:
  jobs    ``inferd batch mlp IN.parquet -o OUT.parquet`` on --small-rows and --rows rows: wall
          time, rows/s (end to end, and of the compute phase as the job reports it), and the
          peak RSS of the job process and of its whole process tree. The reference: the model
          alone in a process (torch, every usable core), its best rows/s over batch sizes
          64..4096, measured right before and right after each job; the ratio is to the mean
  kill    kill -9 the job --kills times, each at a random point 0..--kill-max-s seconds after
          that run's first commit, resume each time, then compare the output's bytes with an
          uninterrupted run at the batch size the job chose
Inputs are written to a temporary folder (about 2 KB per row) and deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import save
from inferd.config import usable_cpus
from inferd.demo import demo_repository

BATCHES = (64, 256, 1024, 2048, 4096)


def write_input(path: Path, rows: int, group_rows: int = 16384) -> None:
    """``rows`` rows of ``id`` and a 512-float ``input``, written a row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema([("id", pa.int64()), ("input", pa.list_(pa.float32(), 512))])
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for start in range(0, rows, group_rows):
            n = min(group_rows, rows - start)
            x = rng.standard_normal((n, 512), dtype=np.float32)
            ids = pa.array(np.arange(start, start + n))
            column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 512)
            writer.write_table(pa.table({"id": ids, "input": column}, schema=schema))


def raw_throughput_in_child(pt2: Path, seconds: float) -> dict[int, float]:
    """``raw_throughput`` in a fresh process (this one's torch state stays untouched)."""
    code = (
        "import json; from benchmarks.batch_job import raw_throughput; from pathlib import Path; "
        f"print(json.dumps(raw_throughput(Path({str(pt2)!r}), {seconds})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(out.stdout.splitlines()[-1]).items()}


def raw_throughput(pt2: Path, seconds: float) -> dict[int, float]:
    """Rows/s of the model in this process with every usable core, at each batch size."""
    import torch

    torch.set_num_threads(usable_cpus())
    module = torch.export.load(str(pt2)).module()
    out = {}
    with torch.inference_mode():
        for batch in BATCHES:
            x = torch.randn(batch, 512)
            module(x)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / len(BATCHES):
                module(x)
                n += 1
            out[batch] = n * batch / (time.perf_counter() - start)
    return out


class TreeRss:
    """Samples the summed RSS of a process and all its descendants, keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_mb = max(self.peak_mb, _tree_rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def _tree_rss_mb(root: int) -> float:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {root}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def inferd_batch(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "inferd", "batch", *args, "--no-progress"]
    with log.open("ab") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)


def run_job(args: list[str], log: Path) -> dict[str, float]:
    """Run one job to completion: wall time, the process's and the tree's peak RSS."""
    started = time.perf_counter()
    proc = inferd_batch(args, log)
    sampler = TreeRss(proc.pid)
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    tree = sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"inferd batch {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
    report = log.read_text()
    return {
        "wall_s": wall,
        "reported_rows_per_s": _reported(report, r"throughput\s+([\d,]+) rows/s"),
        "batch_size": _reported(report, r"batch size\s+(\d+)"),
        # The job's own figure (its RUSAGE_SELF): wait4's would include the fork server it reaps.
        "process_peak_rss_mb": _reported(report, r"peak memory\s+([\d,]+) MB"),
        "tree_peak_rss_mb": tree,
    }


def _reported(text: str, pattern: str) -> float:
    found = re.findall(pattern, text)
    return float(found[-1].replace(",", "")) if found else float("nan")


def jobs(mlp: Path, folder: Path, sizes: list[int], raw_s: float) -> dict[int, dict[str, float]]:
    """Each job bracketed by raw measurements: its ratio is to their mean best."""
    out: dict[int, dict[str, float]] = {}
    for rows in sizes:
        source = folder / f"in_{rows}.parquet"
        write_input(source, rows)
        target = folder / f"out_{rows}.parquet"
        before = max(raw_throughput_in_child(mlp / "model.pt2", raw_s).values())
        result = run_job([str(mlp), str(source), "-o", str(target)], folder / f"job_{rows}.log")
        after = max(raw_throughput_in_child(mlp / "model.pt2", raw_s).values())
        raw = (before + after) / 2
        result |= {"raw_best_before": before, "raw_best_after": after,
                   "rows_per_s": rows / result["wall_s"]}  # fmt: skip
        result["ratio_end_to_end"] = result["rows_per_s"] / raw
        result["ratio_computing"] = result["reported_rows_per_s"] / raw
        out[rows] = result
        print(
            f"{rows:,} rows: {result['wall_s']:.1f} s; {result['rows_per_s']:,.0f} rows/s end "
            f"to end ({result['ratio_end_to_end']:.0%} of raw), "
            f"{result['reported_rows_per_s']:,.0f} rows/s computing "
            f"({result['ratio_computing']:.0%}); raw best {before:,.0f} before, {after:,.0f} "
            f"after; batch {result['batch_size']:.0f}; peak RSS "
            f"{result['process_peak_rss_mb']:.0f} MB job process, "
            f"{result['tree_peak_rss_mb']:.0f} MB with replicas",
            flush=True,
        )
        source.unlink()
        target.unlink()
    return out


def kill_test(
    mlp: Path, folder: Path, rows: int, kills: int, args: argparse.Namespace
) -> dict[str, object]:
    """kill -9 at random points, resume each time; compare with an uninterrupted run."""
    rng = random.Random(args.seed)
    source, target = folder / "kill_in.parquet", folder / "kill_out.parquet"
    write_input(source, rows)
    job = [str(mlp), str(source), "-o", str(target)]
    log = folder / "kill.log"
    points: list[float] = []
    started = time.perf_counter()
    manifest = target.with_name(target.name + ".inferd-job") / "manifest.jsonl"
    while len(points) < kills:
        proc = inferd_batch(job, log)
        before = _chunks(manifest)
        while _chunks(manifest) <= before:  # started: a chunk of this run is committed
            if proc.poll() is not None:
                raise RuntimeError(f"the job ended before kill {len(points) + 1} (use more rows "
                                   f"if it finished):\n{log.read_text()[-2000:]}")  # fmt: skip
            time.sleep(0.05)
        delay = rng.uniform(0.0, args.kill_max_s)
        try:
            proc.wait(timeout=delay)
            raise RuntimeError(f"the job finished before kill {len(points) + 1}; use more rows")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        points.append(round(delay, 2))
        print(f"kill -9 {delay:.1f} s after this run's first commit: {_chunks(manifest)} "
              "chunks committed", flush=True)  # fmt: skip
    run_job(job, log)
    interrupted_s = time.perf_counter() - started
    chosen = int(_reported(log.read_text(), r"batch size\s+(\d+)"))
    reference = folder / "kill_ref.parquet"
    ref_job = [str(mlp), str(source), "-o", str(reference), "--batch-size", str(chosen)]
    run_job(ref_job, folder / "kill_ref.log")
    identical = target.read_bytes() == reference.read_bytes()
    ids_in_order = _ids_in_order(target, rows)
    print(
        f"{kills} kills at {points} s, resumed each time: output "
        f"{'IDENTICAL to' if identical else 'DIFFERENT from'} an uninterrupted run at batch "
        f"size {chosen}; ids 0..{rows - 1} once each in order: {ids_in_order}",
        flush=True,
    )
    return {"rows": rows, "kill_after_s": points, "batch_size": chosen, "identical": identical,
            "ids_in_order": ids_in_order, "interrupted_total_s": interrupted_s}  # fmt: skip


def _chunks(manifest: Path) -> int:
    if not manifest.exists():
        return 0
    return manifest.read_text().count('"kind":"chunk"')


def _ids_in_order(path: Path, rows: int) -> bool:
    import pyarrow.parquet as pq

    ids = pq.read_table(path, columns=["id"]).column("id").to_numpy()
    return bool(np.array_equal(ids, np.arange(rows)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--kill-rows", type=int, default=400_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--raw-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kill-max-s", type=float, default=4.0,
                        help="latest kill, in seconds after a run's first commit")  # fmt: skip
    parser.add_argument("--only", nargs="*", default=["jobs", "kill"])
    args = parser.parse_args()
    mlp = demo_repository() / "mlp"
    folder = Path(tempfile.mkdtemp(prefix="inferd-batch-bench-"))
    results: dict[str, object] = {"cpus": usable_cpus()}
    try:
        if "jobs" in args.only:
            results["jobs"] = jobs(mlp, folder, [args.small_rows, args.rows], args.raw_seconds)
        if "kill" in args.only:
            results["kill"] = kill_test(mlp, folder, args.kill_rows, args.kills, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("saved", save("batch_job", results))


if __name__ == "__main__":
    main()
