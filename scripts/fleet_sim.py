#!/usr/bin/env python
"""Fleet simulation: N devices publish events to one local Mosquitto (issue 14).

    scripts/fleet_sim.py                          # 50 devices, 30 s
    scripts/fleet_sim.py --devices 200 --duration 60 --fps 15 --output scripts/results/fleet_sim.json
    scripts/fleet_sim.py --devices 50 --burst 100      # throughput: 200 events per device at once

Each device is a light process that runs tledge's own event code, not a copy: decisions
at `--fps` (a seeded random walk over four labels, with flicker) go through
`edge.events.EventTracker` (hysteresis, `--hold`) into `edge.outputs.mqtt.MqttOutput`
with its on-disk queue, exactly as `tledge run --mqtt` does; only the camera and the
model are left out (they do not change what reaches the broker). One subscriber records
every event at the broker.

Reported: events sent (submitted by the devices), delivered (PUBACKed), received (unique
ids at the subscriber), duplicates, lost (sent - received), out-of-order arrivals per
device, and the broker-side rate (events received per second while the fleet ran).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

LABELS = ("bees", "wasps", "empty", "unknown")


def device_main(args: argparse.Namespace) -> None:
    """One device: decisions -> EventTracker -> MqttOutput (with its disk queue)."""
    import random

    from edge.events import EventOptions, EventTracker
    from edge.outputs.mqtt import MqttOptions, MqttOutput
    from edge.outputs.queue import DiskQueue

    name = f"dev{args.index:04d}"
    rng = random.Random(args.index)
    options = MqttOptions.from_url(f"mqtt://127.0.0.1:{args.port}/fleet", name)
    output = MqttOutput(options, DiskQueue(Path(args.queue_root) / name, durable=not args.no_fsync))
    output.start()
    time.sleep(max(0.0, args.start_at - time.time()))  # every device starts together
    if args.burst:
        burst = EventTracker(EventOptions(hold=1, device=name))
        for frame in range(args.burst):  # a change every frame: an end and a start each
            for event in burst.feed(LABELS[frame % 2], 0.9, frame, time.time()):
                output.submit(event)
        summary = output.close(time.monotonic() + args.flush)
        print(json.dumps({"device": name, **{k: v for k, v in summary.items() if k != "line"}}), flush=True)
        return
    tracker = EventTracker(EventOptions(hold=args.hold, device=name))
    label, frame, period = rng.choice(LABELS), 0, 1.0 / args.fps
    start = time.monotonic()
    while time.monotonic() - start < args.duration:
        if rng.random() < args.change:
            label = rng.choice(LABELS)  # a real change (or a flicker when it does not hold)
        shown = rng.choice(LABELS) if rng.random() < 0.05 else label  # one odd frame now and then
        for event in tracker.feed(shown, rng.uniform(0.6, 1.0), frame, time.time()):
            output.submit(event)
        frame += 1
        time.sleep(max(0.0, start + frame * period - time.monotonic()))
    for event in tracker.finish(frame, time.time()):
        output.submit(event)
    summary = output.close(time.monotonic() + args.flush)
    print(json.dumps({"device": name, **{k: v for k, v in summary.items() if k != "line"}}), flush=True)


def fleet_main(args: argparse.Namespace) -> None:
    import bench_common as bc
    from mosquitto_local import LocalBroker, Recorder

    queue_root = Path(tempfile.mkdtemp(prefix="tledge-fleet-"))
    header = bc.stamp()
    with LocalBroker() as broker:
        recorder = Recorder(broker.port, "fleet/+/event")
        bc.log(f"{args.devices} devices for {args.duration:.0f} s against mosquitto on port {broker.port}")
        common = ["--port", str(broker.port), "--duration", str(args.duration), "--fps", str(args.fps), "--hold", str(args.hold),
                  "--change", str(args.change), "--flush", str(args.flush), "--queue-root", str(queue_root)]
        if args.no_fsync:
            common.append("--no-fsync")
        started = time.time()
        # Start together once every process has imported and connected (a loaded 2-core
        # machine takes a while to start 50 Pythons).
        common += ["--start-at", str(started + max(10.0, 0.5 * args.devices)), "--burst", str(args.burst)]
        children = [
            subprocess.Popen([sys.executable, __file__, "device", "--index", str(i), *common], stdout=subprocess.PIPE, text=True)
            for i in range(args.devices)
        ]
        summaries = []
        for child in children:
            out, _ = child.communicate(timeout=args.duration + args.flush + 120)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            summaries.append(json.loads(lines[-1]) if lines else {"device": None, "failed": child.returncode})
        time.sleep(1.0)  # the last PUBACKed messages reach the subscriber
        received = recorder.snapshot()
        recorder.close()
    load_after = os.getloadavg()[0]
    sent = sum(s.get("submitted", 0) for s in summaries)
    delivered = sum(s.get("delivered", 0) for s in summaries)
    unique: dict[str, dict[str, Any]] = {}  # id -> event
    out_of_order, last_seq = 0, {}
    for _, event in received:
        if event["id"] in unique:
            continue
        unique[event["id"]] = event
        device = event["device"]
        if event["seq"] < last_seq.get(device, -1):
            out_of_order += 1
        last_seq[device] = event["seq"]
    queued_ids = set()
    for root in queue_root.glob("*/*.json"):
        try:
            queued_ids.add(json.loads(root.read_text())["id"])
        except (OSError, ValueError, KeyError):
            pass
    times = [t for t, _ in received]
    span = (max(times) - min(times)) if len(times) > 1 else 0.0
    result = {
        **header,
        "machine_load_avg_1m_after": round(load_after, 2),
        "parameters": {k: v for k, v in vars(args).items() if k not in ("role", "output", "index", "port", "queue_root", "start_at")},
        "devices_started": args.devices,
        "devices_reported": sum(1 for s in summaries if s.get("device")),
        "events_sent": sent,
        "events_delivered_acked": delivered,
        "events_received_unique": len(unique),
        "duplicates": len(received) - len(unique),
        # Queued events stay on the device's disk for its next run: late, not lost. An
        # event can be both received and queued (its PUBACK had not come back at exit).
        "still_queued_on_devices": sum(s.get("queued", 0) for s in summaries),
        "unsaved_at_exit_on_devices": sum(s.get("unsaved", 0) for s in summaries),
        "lost": sent - len(set(unique) | queued_ids),
        "overflowed": sum(s.get("overflowed", 0) for s in summaries),
        "out_of_order": out_of_order,
        "broker_side_rate_events_per_s": round(len(received) / span, 2) if span else None,
        "receive_span_s": round(span, 3),
        "wall_s": round(time.time() - started, 2),
    }
    text = json.dumps(result, indent=2)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="fleet", choices=("fleet", "device"))
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each device runs")
    parser.add_argument("--fps", type=float, default=10.0, help="decisions per second per device")
    parser.add_argument("--hold", type=int, default=3)
    parser.add_argument("--change", type=float, default=0.08, help="chance per frame that the scene changes")
    parser.add_argument("--flush", type=float, default=10.0, help="seconds a device keeps delivering at its end")
    parser.add_argument("--no-fsync", action="store_true", help="queue writes without fsync (SD-card wear vs durability)")
    parser.add_argument("--burst", type=int, default=0, help="instead of a scene: each device submits this many frames' events at once (2 events per frame)")
    parser.add_argument("--output", help="also write the JSON result here")
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--queue-root", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "device":
        device_main(args)
    else:
        fleet_main(args)


if __name__ == "__main__":
    main()
