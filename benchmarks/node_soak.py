"""Soak test of the segmentation node: a camera's stream for minutes, memory and frame accounting.

    source scripts/env.sh && python benchmarks/node_soak.py [--duration 600] [--rate 30] [--size 1024x2048]

Starts the node as its own process (pem_stdc1, random weights, on --device: CPU by
default; other node parameters with --node-param NAME:=VALUE), publishes
rgb8 frames at `rate` Hz for `duration` seconds, samples
the node's RSS every few seconds and reads its /diagnostics. It passes when
the node stays up, its RSS stays flat after the warm-up (the peak RSS of the
last third of the run exceeds that of the first third after warm-up by less
than 50 MB; RSS swings by hundreds of MB within each frame, so peaks are
compared, sampled every second), every
frame it received is counted as processed, dropped, rejected or failed, and
it exits cleanly on SIGINT. Results: benchmarks/results/node_soak.{json,md}
(node_soak_cuda.* for --device cuda: the GPU check of 0 drops at 30 Hz).

Input QoS is reliable (keep last 1) by default: between processes, Fast DDS
3.2 with its default transports delivers no best-effort 2048x1024 rgb8 sample
at all (6 MB exceeds its 0.5 MB shared-memory segment and UDP loses
fragments), so `--qos sensor_data` measures only transport loss at that size.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ros_seg.eval.machine_info import machine_info
from ros_seg.msg import SegmentArray
from ros_seg.ros.image_conversion import array_to_image

RESULTS = Path(__file__).resolve().parent / "results"
NAMESPACE = "/soak"
RSS_GROWTH_LIMIT_MB = 50.0
COUNTS = ("received", "processed", "dropped", "rejected", "failed")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class SoakClient:
    """Publishes the camera stream; counts outputs; keeps the node's latest diagnostics."""

    def __init__(self, qos: QoSProfile) -> None:
        self.node = Node("soak_client")
        self.publisher = self.node.create_publisher(Image, f"{NAMESPACE}/image", qos)
        self.outputs = 0
        self.status: dict[str, str] = {}
        self._lock = threading.Lock()
        self.node.create_subscription(SegmentArray, f"{NAMESPACE}/segments", self._on_segments, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def _on_segments(self, msg: SegmentArray) -> None:
        with self._lock:
            self.outputs += 1

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"ros_seg: segmentation_node ({NAMESPACE}/segmentation_node)":
                with self._lock:
                    self.status = {kv.key: kv.value for kv in status.values}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {k: int(self.status[f"frames_{k}"]) for k in COUNTS} if self.status else {}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def wait(condition: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def markdown(r: dict) -> str:
    m = r["machine"]
    c = r["final_counts"]
    verdict = "PASS" if r["passed"] else "FAIL"
    return "\n".join([
        "# Segmentation node soak",
        "",
        f"`{r['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cpu_cores']} cores; torch {m['torch']}, Python {m['python']}, {m['os']}; "
        f"load average before / after: {r['load_average'][0]:.1f} / {r['load_average'][1]:.1f}.",
        f"Input: {r['size'][0]}x{r['size'][1]} rgb8 at {r['rate_hz']} Hz ({r['input_qos']} QoS) "
        f"for {r['duration_s']} s; "
        f"{r['model']} on {r.get('device', 'cpu')}"
        + "".join(f", {p}" for p in r.get("node_parameters", []))
        + (f", GPU {m['gpu']}" if "gpu" in m else "") + ", random weights.",
        "",
        f"**{verdict}**: node up for the whole run: {r['node_stayed_up']}; exit code on SIGINT: {r['exit_code']}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| frames published (achieved rate) | {r['published']} ({r['published_rate_hz']:.1f} Hz) |",
        f"| frames received by the node | {c['received']} |",
        f"| processed / dropped / rejected / failed | {c['processed']} / {c['dropped']} / {c['rejected']} / "
        f"{c['failed']} |",
        f"| every received frame accounted for | {r['all_frames_accounted']} |",
        f"| not received (published - received) | {r['published'] - c['received']} |",
        f"| outputs received by the client | {r['outputs_received']} |",
        f"| peak RSS, first third after warm-up ({r['warmup_s']:g} s) -> last third, MB | "
        f"{r['rss_peak_first_third_mb']:.0f} -> {r['rss_peak_last_third_mb']:.0f} |",
        f"| RSS growth after warm-up, MB | {r['rss_growth_mb']:.1f} (limit {RSS_GROWTH_LIMIT_MB:.0f}) |",
        f"| node latency p50 / p95 ms (last 100 frames) | {r['latency_p50_ms']} / {r['latency_p95_ms']} |",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of input")
    parser.add_argument("--rate", type=float, default=30.0, help="input frames per second")
    parser.add_argument("--size", default="1024x2048", help="input HxW")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS must stay flat")
    parser.add_argument("--model", default="pem_stdc1")
    parser.add_argument("--qos", choices=("reliable", "sensor_data"), default="reliable", help="input QoS")
    parser.add_argument("--device", default="cpu", help="the node's device parameter (default cpu)")
    parser.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                        help="another node parameter, e.g. precision:=fp16 (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 80))
    height, width = (int(v) for v in args.size.split("x"))

    load_before = os.getloadavg()[0]
    log = tempfile.NamedTemporaryFile(prefix="node_soak_", suffix=".log", delete=False)
    command = [sys.executable, "-m", "ros_seg.ros.segmentation_node", "--ros-args", "-r", f"__ns:={NAMESPACE}",
               "-p", f"device:={args.device}", "-p", f"model:={args.model}", "-p", f"input_qos:={args.qos}"]
    for param in args.node_param:
        command += ["-p", param]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    rclpy.init(args=[])  # not sys.argv: its NAME:=VALUE options would read as remappings
    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    client = SoakClient(reliable if args.qos == "reliable" else qos_profile_sensor_data)
    if not wait(lambda: client.publisher.get_subscription_count() > 0, 120):
        raise SystemExit(f"the node did not subscribe; its log: {log.name}")

    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = array_to_image(pixels, "rgb8", Header(frame_id="camera"))
    samples: list[tuple[float, float]] = []
    stayed_up = True
    published = 0
    start = time.monotonic()
    next_sample = start
    while (now := time.monotonic()) < start + args.duration:
        msg.header.stamp = client.node.get_clock().now().to_msg()
        client.publisher.publish(msg)
        published += 1
        if now >= next_sample:
            stayed_up = stayed_up and process.poll() is None
            if not stayed_up:
                break
            samples.append((round(now - start, 1), round(rss_mb(process.pid), 1)))
            if len(samples) % 10 == 1:
                print(f"t={now - start:6.0f}s rss={samples[-1][1]:.0f} MB counts={client.counts()}", flush=True)
            next_sample += 1.0
        time.sleep(max(0.0, start + published / args.rate - time.monotonic()))
    elapsed = time.monotonic() - start

    def settled() -> bool:
        counts = client.counts()
        return bool(counts) and counts["received"] == sum(counts[k] for k in COUNTS[1:])

    accounted = stayed_up and wait(settled, 30)
    time.sleep(2.5)  # one more diagnostics period, so the final counts are the settled ones
    final = client.counts()
    status = dict(client.status)
    process.send_signal(signal.SIGINT)
    exit_code = process.wait(timeout=60)
    outputs = client.outputs
    client.close()
    rclpy.shutdown()

    after_warmup = [rss for t, rss in samples if t >= args.warmup] or [samples[-1][1]]
    third = max(1, len(after_warmup) // 3)
    first_peak, last_peak = max(after_warmup[:third]), max(after_warmup[-third:])
    growth = last_peak - first_peak
    result = {
        "benchmark": "node_soak",
        "command": f"python benchmarks/node_soak.py --duration {args.duration:g} --rate {args.rate:g} "
                   f"--size {args.size} --warmup {args.warmup:g} --qos {args.qos}"
                   + (f" --device {args.device}" if args.device != "cpu" else "")
                   + "".join(f" --node-param {p}" for p in args.node_param),
        "model": args.model,
        "device": args.device,
        "node_parameters": args.node_param,
        "size": [height, width],
        "rate_hz": args.rate,
        "input_qos": args.qos,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "published": published,
        "published_rate_hz": published / elapsed,
        "final_counts": final,
        "all_frames_accounted": accounted,
        "outputs_received": outputs,
        "node_stayed_up": stayed_up,
        "exit_code": exit_code,
        "rss_samples_mb": samples,
        "rss_peak_first_third_mb": first_peak,
        "rss_peak_last_third_mb": last_peak,
        "rss_growth_mb": growth,
        "latency_p50_ms": status.get("latency_p50_ms"),
        "latency_p95_ms": status.get("latency_p95_ms"),
        "node_log": log.name,
        "load_average": [load_before, os.getloadavg()[0]],
        "machine": machine_info(torch.device(args.device if args.device.startswith("cuda") else "cpu")),
    }
    result["passed"] = stayed_up and accounted and growth < RSS_GROWTH_LIMIT_MB and exit_code == 0
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "node_soak" if args.device == "cpu" else f"node_soak_{args.device.replace(':', '')}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
