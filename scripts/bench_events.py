#!/usr/bin/env python
"""Event outputs: latency from decision to broker receipt, and what the sinks cost the
camera loop (issue 14).

    scripts/bench_events.py --output scripts/results/bench_events.json
    scripts/bench_events.py --quick

1. Latency. Events made by `edge.events.EventTracker` are submitted to tledge's MQTT and
   webhook outputs (on-disk queue with fsync, QoS 1 / HTTP POST) at `--event-rate` per
   second; a receiver process (a paho subscriber and an aiohttp webhook server) stamps
   each arrival. latency = arrival time - the event's `decided_at` (both time.time() on
   this machine). p50 / p99 in ms, per output.
2. Camera-loop fps. The real `edge.pipeline.Pipeline` runs with no sinks and with all
   event outputs on (MQTT + webhook + `--exec true`, decisions -> events with a hold),
   rounds alternating the two; fps is the loop's steady state (first to last frame,
   stamped by a probe sink), so neither start-up nor the bounded flush at exit counts;
   CPU ms per frame over the same frames (all threads of the process, plus the --exec
   children apart) shows the cost independently of the machine's other load. Medians,
   their ratio (goal: within 3 %) and the events fired per run are reported per case:

   - tiny_unpaced_segN: the test suite's 32x32 int8 colour model over a generated colour
     video (colour changes every N frames), as fast as the loop goes (~1 ms a frame): a
     stress case, where one event's cost is large next to one frame's.
   - real_unpaced: Google's quantized MobileNetV2 1.0 224 (ImageNet, ../shared/models)
     over a video alternating two real photos (../shared/images, 320x240, sensor-like
     noise) every `--real-segment` frames, `--threshold 0.3`; as fast as the loop goes.
     Skipped, with the reason, when ../shared is absent.
   - tiny_paced_30fps: the colour model with the source paced as a 30 fps camera
     (`realtime`: frames arrive at the file's 30 fps and drop when the loop is late).

The colour model (converted with TensorFlow in a child process) and the videos are made
once under scripts/out/events/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
OUT = ROOT / "scripts" / "out" / "events"


# -- receiver process ----------------------------------------------------------------------
def receiver_main(args: argparse.Namespace) -> None:
    """Subscriber + webhook server; on SIGTERM writes {"mqtt": [...], "webhook": [...]} arrivals."""
    import asyncio

    from aiohttp import web

    from mosquitto_local import Recorder

    recorder = Recorder(args.port, "bench/+/event")
    hooks: list[tuple[float, dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        hooks.append((time.time(), json.loads(body)))
        return web.Response(text="ok")

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.webhook_port).start()
        Path(args.ready).write_text("ready")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    recorder.close()

    def rows(items: list[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
        return [{"at": t, "id": e["id"], "device": e["device"], "decided_at": e["decided_at"]} for t, e in items]

    Path(args.result).write_text(json.dumps({"mqtt": rows(recorder.snapshot()), "webhook": rows(hooks)}))


# -- model and video -----------------------------------------------------------------------
def make_bundle() -> Path:
    """The colour classifier as a tledge bundle (converted once, in a TensorFlow child)."""
    bundle = OUT / "colours"
    if not (bundle / "manifest.json").is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        code = (
            "import sys; sys.path[:0] = ['tests/edge', 'tests']; from pathlib import Path;"
            "from edge_models import build_keras_model, convert, write_bundle;"
            f"write_bundle(Path({str(bundle)!r}), convert(build_keras_model(), 'uint8'))"
        )
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return bundle


def make_video(frames: int, segment: int) -> Path:
    import cv2
    import numpy as np

    path = OUT / f"colours_{frames}_{segment}.avi"
    if not path.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        palette = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (128, 128, 128)]
        rng = np.random.default_rng(0)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
        for i in range(frames):
            base = np.array(palette[(i // segment) % 4], dtype=np.float64)
            frame_rgb = np.clip(base + rng.normal(0, 20, (240, 320, 3)), 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
        writer.release()
    return path


PHOTOS = ("coffee.png", "rocket.jpg")  # ImageNet top-1 "espresso" and "missile", both >= 0.5


def make_photo_video(frames: int, segment: int, photos_dir: Path) -> Path:
    """Real photos, 320x240, alternating every `segment` frames, with fresh noise on each
    frame (sigma 6 grey levels) so no two frames are alike, like a camera's sensor."""
    import cv2
    import numpy as np

    path = OUT / f"photos_{frames}_{segment}.avi"
    if not path.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        images = []
        for name in PHOTOS:
            bgr = cv2.imread(str(photos_dir / name))
            images.append(cv2.resize(bgr, (320, 240), interpolation=cv2.INTER_AREA).astype(np.float64))
        rng = np.random.default_rng(0)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
        for i in range(frames):
            base = images[(i // segment) % len(images)]
            writer.write(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
        writer.release()
    return path


@dataclass(frozen=True)
class LoopCase:
    """One camera-loop configuration, measured with and without the sinks."""

    key: str
    describe: str
    model: Path
    video: Path
    frames: int
    segment: int  # frames between scene changes
    labels: Path | None = None  # for a bare .tflite
    thresholds: tuple[str, ...] = ()  # --threshold values
    realtime: bool = False  # pace the file as a camera at its own fps
    hold: int = 3  # frames


# -- measurements ----------------------------------------------------------------------------
def outputs_config(port: int, webhook_port: int, device: str, queue: Path, with_exec: bool, hold: int = 3) -> Any:
    from edge.outputs.setup import OutputsConfig

    return OutputsConfig(
        device=device, mqtt_url=f"mqtt://127.0.0.1:{port}/bench", webhook_url=f"http://127.0.0.1:{webhook_port}/hook",
        exec_command="true" if with_exec else None, queue_dir=queue, hold=hold, flush_timeout_s=30.0,
    )


def measure_latency(port: int, webhook_port: int, count: int, rate: float, queue: Path) -> dict[str, Any]:
    from edge.events import EventOptions, EventTracker
    from edge.outputs.setup import build_events_sink

    sink = build_events_sink(outputs_config(port, webhook_port, "latency", queue, with_exec=False))
    tracker = EventTracker(EventOptions(hold=1, device="latency"))
    labels = ("bees", "wasps")
    period, start, sent, frame = 1.0 / rate, time.monotonic(), 0, 0
    cpu0, kids0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    while sent < count:
        for event in tracker.feed(labels[frame % 2], 0.9, frame, time.time()):  # every frame: end + start
            for output in sink.outputs:
                output.submit(event)
            sent += 1
        frame += 1
        time.sleep(max(0.0, start + sent * period - time.monotonic()))
    sink.close()
    cpu = time.process_time() - cpu0  # the outputs' threads; the pacing loop itself sleeps
    return {"events": sent, "cpu_ms_per_event_mqtt_and_webhook": round(cpu * 1000.0 / sent, 4), "summaries": {k: {x: y for x, y in v.items() if x != "line"} for k, v in sink.summaries.items()}}


class Probe:
    """First sink: stamps wall and CPU time at every frame, so the rate is the loop's own
    steady state (first to last frame), without start-up or the flush at exit."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def emit(self, frame_rgb: Any, result: Any) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def close(self) -> None:
        pass


def run_loop(case: LoopCase, sink: Any) -> dict[str, Any]:
    from edge.bundle import load_model_info
    from edge.classifier import Classifier
    from edge.decision import DecisionPolicy
    from edge.pipeline import Pipeline, PipelineOptions
    from edge.sources import VideoFileSource

    info = load_model_info(case.model, case.labels)
    clf = Classifier(info, threads=1)
    options = PipelineOptions(decision=DecisionPolicy.for_model(clf.labels, info.manifest, case.thresholds), realtime=case.realtime)
    probe = Probe()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats = Pipeline(clf, VideoFileSource(case.video), [probe] + ([sink] if sink is not None else []), options).run()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time is what the sinks cost whatever else the machine runs: this process (all
    # its threads, the outputs' workers included) and the --exec children it waited for.
    kids = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    span, cpu = probe.wall[-1] - probe.wall[0], probe.cpu[-1] - probe.cpu[0]
    steady = len(probe.wall) - 1
    return {"frames": stats.frames, "dropped": stats.dropped, "fps": round(steady / span, 2), "cpu_ms_per_frame": round(cpu * 1000.0 / steady, 4),
            "children_cpu_ms_per_frame": round(kids * 1000.0 / steady, 4),
            "run_s_including_start_and_flush": round(stats.elapsed_s, 4)}


def compare_loops(case: LoopCase, rounds_n: int, port: int, webhook_port: int, work: Path) -> dict[str, list[dict[str, Any]]]:
    """Alternate no sinks / all outputs, `rounds_n` times each, on one case."""
    import bench_common as bc
    from edge.outputs.setup import build_events_sink

    rounds: dict[str, list[dict[str, Any]]] = {"none": [], "all": []}
    run_loop(case, None)  # warm-up: file cache, interpreter
    for r in range(rounds_n):
        order = ("none", "all") if r % 2 == 0 else ("all", "none")
        for config in order:
            sink = None
            if config == "all":
                sink = build_events_sink(outputs_config(port, webhook_port, f"{case.key}-{r}".replace("_", "-"), work / f"q-{case.key}-{r}",
                                                        with_exec=True, hold=case.hold))
            row = run_loop(case, sink)
            if sink is not None:
                row["outputs"] = {k: {x: y for x, y in v.items() if x not in ("line", "queue_dir")} for k, v in sink.summaries.items()}
                row["events_fired"] = row["outputs"]["mqtt"]["submitted"]
            row["load_avg_1m"] = round(os.getloadavg()[0], 2)
            rounds[config].append(row)
            bc.log(f"{case.key} round {r} {config}: {row['fps']} fps, {row['cpu_ms_per_frame']} CPU ms/frame, "
                   f"{row.get('events_fired', '-')} events, {row['dropped']} dropped")
    return rounds


def summarise(case: LoopCase, rounds: dict[str, list[dict[str, Any]]], arrivals: dict[str, Any]) -> dict[str, Any]:
    none, all_ = rounds["none"], rounds["all"]
    med = statistics.median
    device = f"{case.key}-".replace("_", "-")
    return {
        "describe": case.describe,
        "model": str(case.model.name),
        "video": f"{case.frames} frames 320x240 MJPG at 30 fps, scene changes every {case.segment} frames"
                 + (", paced at 30 fps (realtime)" if case.realtime else ", unpaced"),
        "thresholds": list(case.thresholds),
        "hold": case.hold,
        "rounds": rounds,
        "median_fps_no_sinks": med(r["fps"] for r in none),
        "median_fps_all_sinks": med(r["fps"] for r in all_),
        "ratio_fps_all_over_none": round(med(r["fps"] for r in all_) / med(r["fps"] for r in none), 4),
        "median_cpu_ms_per_frame_no_sinks": med(r["cpu_ms_per_frame"] for r in none),
        "median_cpu_ms_per_frame_all_sinks": med(r["cpu_ms_per_frame"] for r in all_),
        "ratio_cpu_per_frame_all_over_none": round(med(r["cpu_ms_per_frame"] for r in all_) / med(r["cpu_ms_per_frame"] for r in none), 4),
        "median_exec_children_cpu_ms_per_frame": med(r["children_cpu_ms_per_frame"] for r in all_),
        "median_dropped_no_sinks": med(r["dropped"] for r in none),
        "median_dropped_all_sinks": med(r["dropped"] for r in all_),
        "events_fired_per_run": [r["events_fired"] for r in all_],
        "events_received_by_broker": len([a for a in arrivals["mqtt"] if a["device"].startswith(device)]),
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    import numpy as np

    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None, "n": 0}
    arr = np.asarray(values) * 1000.0
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p99_ms": round(float(np.percentile(arr, 99)), 3),
            "max_ms": round(float(arr.max()), 3), "n": int(arr.size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="bench", choices=("bench", "receiver"))
    parser.add_argument("--latency-events", type=int, default=400)
    parser.add_argument("--event-rate", type=float, default=20.0, help="events per second in the latency part")
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--segment", type=int, nargs="+", default=[300, 30],
                        help="frames per colour (events every this many frames); one fps comparison per value")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--real-frames", type=int, default=600, help="frames of the photo video for the real-size model")
    parser.add_argument("--real-segment", type=int, default=60, help="frames per photo")
    parser.add_argument("--real-rounds", type=int, default=5)
    parser.add_argument("--paced-frames", type=int, default=300, help="frames of the 30 fps paced case (300 = 10 s)")
    parser.add_argument("--paced-segment", type=int, default=30)
    parser.add_argument("--paced-rounds", type=int, default=5)
    parser.add_argument("--cases", nargs="+", default=["tiny", "real", "paced"], choices=("tiny", "real", "paced"))
    parser.add_argument("--quick", action="store_true", help="100 events, 600 tiny / 240 real / 150 paced frames, 3 rounds")
    parser.add_argument("--output", help="also write the JSON result here")
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--webhook-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ready", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "receiver":
        receiver_main(args)
        return
    if args.quick:
        args.latency_events, args.frames, args.rounds = 100, 600, 3
        args.real_frames, args.real_rounds, args.paced_frames, args.paced_rounds = 240, 3, 150, 3

    import bench_common as bc
    from mosquitto_local import LocalBroker, free_port

    header = bc.stamp()
    bundle = make_bundle()
    cases: list[LoopCase] = []
    skipped: dict[str, str] = {}
    if "tiny" in args.cases:
        cases += [LoopCase(f"tiny_unpaced_seg{seg}", "32x32 int8 colour model, unpaced (stress: ~1 ms a frame)", bundle,
                           make_video(args.frames, seg), args.frames, seg) for seg in args.segment]
    if "real" in args.cases:
        if bc.GOOGLE_MODEL.is_file() and bc.GOOGLE_LABELS.is_file() and all((bc.SHARED / "images" / n).is_file() for n in PHOTOS):
            cases.append(LoopCase("real_unpaced", "Google MobileNetV2 1.0 224 uint8 (ImageNet), two real photos alternating, unpaced",
                                  bc.GOOGLE_MODEL, make_photo_video(args.real_frames, args.real_segment, bc.SHARED / "images"),
                                  args.real_frames, args.real_segment, labels=bc.GOOGLE_LABELS, thresholds=("0.3",)))
        else:
            skipped["real_unpaced"] = f"{bc.GOOGLE_MODEL} or the photos {PHOTOS} under {bc.SHARED / 'images'} are absent (../shared)"
    if "paced" in args.cases:
        seg = args.paced_segment
        cases.append(LoopCase("tiny_paced_30fps", "32x32 int8 colour model, source paced as a 30 fps camera", bundle,
                              make_video(args.paced_frames, seg), args.paced_frames, seg, realtime=True))
    rounds_of = {"real_unpaced": args.real_rounds, "tiny_paced_30fps": args.paced_rounds}
    work = Path(tempfile.mkdtemp(prefix="tledge-bench-events-"))
    webhook_port = free_port()
    with LocalBroker() as broker:
        ready, result_file = work / "ready", work / "arrivals.json"
        receiver = subprocess.Popen([sys.executable, __file__, "receiver", "--port", str(broker.port), "--webhook-port", str(webhook_port),
                                     "--ready", str(ready), "--result", str(result_file)])
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        bc.log(f"latency: {args.latency_events} events at {args.event_rate:g}/s")
        latency_run = measure_latency(broker.port, webhook_port, args.latency_events, args.event_rate, work / "q-latency")
        loops = {case.key: compare_loops(case, rounds_of.get(case.key, args.rounds), broker.port, webhook_port, work) for case in cases}
        time.sleep(1.0)
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
    arrivals = json.loads(result_file.read_text())
    latency = {}
    for output in ("mqtt", "webhook"):
        rows = [a for a in arrivals[output] if a["device"] == "latency"]
        first = {}
        for a in rows:
            first.setdefault(a["id"], a["at"] - a["decided_at"])
        latency[output] = percentiles(list(first.values()))
    result = {
        **header,
        "machine_load_avg_1m_after": round(os.getloadavg()[0], 2),
        "parameters": {k: v for k, v in vars(args).items() if k not in ("role", "port", "webhook_port", "ready", "result", "output")},
        "latency_decision_to_receipt": latency,
        "latency_run": latency_run,
        "camera_loop": {
            "interpreter_threads": 1,
            "outputs_on": "MQTT (QoS 1, fsynced disk queue) + webhook (fsynced disk queue, kept-alive connection) + --exec true, --hold 3",
            "cases": {case.key: summarise(case, loops[case.key], arrivals) for case in cases},
            "skipped": skipped,
        },
    }
    text = json.dumps(result, indent=2, default=str)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
