"""The steps of scripts/pi_check.sh, in Python (standard library only).

Sub-commands (the first three run by pi_check.sh; `markdown RESULT.json...` prints the
README's table):

    reference WORK   on the x86 host, with the host's tledge: the numbers ARM must match
    device WORK      inside the arm64 chroot, with the system python3: creates a venv,
                     installs tledge from the wheel (core only, then [serve]), runs the
                     edge commands, writes WORK/device.json
    report ...       on the host: compares device.json with reference.json per suite,
                     prints the pass/fail table and writes it as JSON

WORK layout (shared by host and chroot; /tmp/tledge-pi inside the chroot):
    in/     the wheel, Google's model + labels, photos, the x86 bundle, its images, a video
    out/    what each side wrote
Every tledge call goes through the `tledge` console script, never a module path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

#: Scores (dequantized probabilities, 0..1) may differ between x86 and ARM by this much
#: (about 10 steps of a 1/256 uint8 output). The preprocessed input tensors are
#: byte-identical on both; the int8 kernels round differently per CPU. The first
#: Bookworm run (2026-11-30) saw at most 0.027 and failed an a-priori 0.01.
SCORE_TOLERANCE = 0.04
#: Frames of the generated video that `tledge run` must classify like x86 does.
VIDEO_FRAMES = 100
VIDEO_AGREEMENT_MIN = 0.98
#: Emulated processes are 10-50x slower than native: generous timeouts (seconds).
STEP_TIMEOUT_S = 1800
SERVE_TIMEOUT_S = 600


def _run(cmd: list[str], timeout: float = STEP_TIMEOUT_S, env: dict[str, str] | None = None) -> dict:
    """Run a command; return rc, stdout, stderr and seconds (never raises on failure)."""
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = 124, exc.stdout or "", f"timed out after {timeout} s"
        out = out if isinstance(out, str) else out.decode("utf-8", "replace")
    except OSError as exc:
        rc, out, err = 127, "", str(exc)
    return {"cmd": " ".join(cmd), "rc": rc, "stdout": out, "stderr": err, "seconds": round(time.monotonic() - start, 1)}


def _json_lines(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def _tail(text: str, n: int = 600) -> str:
    return text[-n:].strip()


def _predict(tledge: str, model: Path, images: list[Path], labels: Path | None = None) -> dict:
    cmd = [tledge, "predict", str(model), *map(str, images), "--json", "--top-k", "3"]
    if labels is not None:
        cmd += ["--labels", str(labels)]
    res = _run(cmd)
    res["rows"] = [{"image": Path(r["path"]).name, "label": r["label"], "score": r["score"], "top1": _top1(r)} for r in _json_lines(res["stdout"])]
    return res


def _top1(record: dict) -> str | None:
    """The best class of a JSON line. Its "label" is the decision, which is `unknown` below
    the bundle's threshold; the class is what the two CPUs' numerics must agree on."""
    top = record.get("top") or []
    return top[0]["label"] if top else record.get("label")


def _run_video(tledge: str, bundle: Path, video: Path) -> dict:
    res = _run([tledge, "run", str(bundle), "--source", str(video), "--json", "--display", "off", "--max-frames", str(VIDEO_FRAMES)])
    lines = _json_lines(res["stdout"])
    res["labels"] = [r.get("label") for r in lines]  # decisions
    res["top1"] = [_top1(r) for r in lines]
    return res


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def _slim(res: dict) -> dict:
    """A step's record without the full output (kept in the tails)."""
    out = {k: v for k, v in res.items() if k not in ("stdout", "stderr")}
    out["stderr_tail"] = _tail(res.get("stderr", ""))
    return out


# --------------------------------------------------------------------------- reference


def reference(work: Path, tledge: str) -> None:
    inp, out = work / "in", work / "out"
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "google": _slim(_predict(tledge, inp / "google" / "model.tflite", _images(inp / "photos"), inp / "google" / "labels.txt")),
        "bundle": _slim(_predict(tledge, inp / "bundle", _images(inp / "bundle_images"))),
        "video": _slim(_run_video(tledge, inp / "bundle", inp / "video_x86.avi")),
    }
    (out / "reference.json").write_text(json.dumps(result, indent=1))


# --------------------------------------------------------------------------- device


class Device:
    """The steps inside the chroot. Each `step_*` appends one record to `self.steps`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.inp = work / "in"
        self.out = work / "out"
        self.venv = Path(os.environ.get("PI_CHECK_VENV", "/opt/tledge-venv"))
        self.tledge = str(self.venv / "bin" / "tledge")
        self.pip = [str(self.venv / "bin" / "python"), "-m", "pip"]
        self.wheel = next(self.inp.glob("tledge-*.whl"))
        self.steps: list[dict] = []
        self.facts: dict = {"machine": platform.machine(), "python": platform.python_version(), "os": _os_release()}

    def add(self, name: str, status: str, detail: str, **extra: object) -> None:
        self.steps.append({"step": name, "status": status, "detail": detail, **extra})
        print(f"[{status:>4}] {name}: {detail}", flush=True)
        self.save()  # after every step: an interrupted run still leaves its rows

    def save(self) -> None:
        tmp = self.out / "device.json.tmp"
        tmp.write_text(json.dumps({"facts": self.facts, "steps": self.steps}, indent=1))
        os.replace(tmp, self.out / "device.json")

    def run_all(self) -> None:
        self.step_install_core()
        if not (self.venv / "bin" / "tledge").exists():
            return
        self.step_no_tensorflow()
        self.step_opencv()
        self.step_doctor()
        self.step_predict("predict_google", self.inp / "google" / "model.tflite", _images(self.inp / "photos"), self.inp / "google" / "labels.txt")
        self.step_predict("predict_bundle", self.inp / "bundle", _images(self.inp / "bundle_images"))
        self.step_video_x86()
        self.step_video_written_here()
        self.step_bench()
        self.step_serve_without_extra()
        self.step_install_serve()
        self.step_serve()
        self.step_gui_opencv_probe()

    # -- install
    def step_install_core(self) -> None:
        if self.venv.exists():
            _run(["rm", "-rf", str(self.venv)])
        made = _run([sys.executable, "-m", "venv", str(self.venv)])
        if made["rc"] != 0:
            self.add("install_core", "FAIL", f"python3 -m venv failed: {_tail(made['stderr'])}")
            return
        report = self.out / "pip-report-core.json"
        res = _run([*self.pip, "install", "--report", str(report), str(self.wheel)])
        (self.out / "pip-install-core.log").write_text(res["stdout"] + res["stderr"])
        chosen = _chosen_wheels(report)
        self.facts["wheels_core"] = chosen
        key = {k: v for k, v in chosen.items() if k in ("ai-edge-litert", "numpy", "opencv-python-headless", "opencv-python", "tflite-runtime")}
        if res["rc"] != 0:
            self.add("install_core", "FAIL", f"pip install {self.wheel.name} failed: {_tail(res['stderr'], 400)}", seconds=res["seconds"])
        else:
            self.add("install_core", "PASS", f"pip install {self.wheel.name} (core only): " + ", ".join(f"{k} {v['version']}" for k, v in sorted(key.items())), seconds=res["seconds"], wheels=key)

    def step_no_tensorflow(self) -> None:
        listed = _run([*self.pip, "list", "--format=json"])
        names = sorted(p["name"].lower() for p in json.loads(listed["stdout"] or "[]"))
        self.facts["pip_list_core"] = names
        imp = _run([str(self.venv / "bin" / "python"), "-c", "import tensorflow"])
        tf_names = [n for n in names if n.startswith(("tensorflow", "tf-", "keras"))]
        if not tf_names and imp["rc"] != 0:
            self.add("no_tensorflow", "PASS", f"{len(names)} distributions installed, none is TensorFlow/Keras; `import tensorflow` fails")
        else:
            self.add("no_tensorflow", "FAIL", f"TensorFlow came with the core install: {tf_names or 'importable'}")

    def step_opencv(self) -> None:
        code = (
            "import cv2, json, re; bi = cv2.getBuildInformation();"
            "gui = re.search(r'GUI:\\s*(\\S+)', bi); ff = re.search(r'FFMPEG:\\s*(\\S+)', bi);"
            "print(json.dumps({'version': cv2.__version__, 'gui': gui and gui.group(1), 'ffmpeg': ff and ff.group(1)}))"
        )
        res = _run([str(self.venv / "bin" / "python"), "-c", code])
        if res["rc"] == 0:
            info = json.loads(res["stdout"].strip().splitlines()[-1])
            self.facts["opencv"] = info
            import glob

            gl = "present" if glob.glob("/usr/lib/*/libGL.so.1") or glob.glob("/lib/*/libGL.so.1") else "absent"
            self.add("import_cv2", "PASS", f"cv2 {info['version']} imports (system libGL.so.1 {gl}); GUI {info['gui']}, FFMPEG {info['ffmpeg']}")
        else:
            self.add("import_cv2", "FAIL", f"import cv2 failed: {_tail(res['stderr'], 300)}")

    def step_doctor(self) -> None:
        helped = _run([self.tledge, "doctor", "--help"], timeout=300)
        if helped["rc"] != 0:
            self.add("doctor", "n/a", "`tledge doctor` is not available in this build")
            return
        res = _run([self.tledge, "doctor"])
        (self.out / "doctor.txt").write_text(res["stdout"] + res["stderr"])
        status = "PASS" if res["rc"] == 0 else "FAIL"
        self.add("doctor", status, f"tledge doctor exit {res['rc']}: {_tail(res['stdout'] or res['stderr'], 300)}")

    def step_predict(self, name: str, model: Path, images: list[Path], labels: Path | None = None) -> None:
        res = _predict(self.tledge, model, images, labels)
        self.facts[name] = _slim(res)
        ok = res["rc"] == 0 and len(res["rows"]) == len(images)
        # The comparison with x86 happens in `report`; here: did it run.
        self.add(name, "PASS" if ok else "FAIL", f"{len(res['rows'])}/{len(images)} images classified (exit {res['rc']}, {res['seconds']} s)" + ("" if ok else f": {_tail(res['stderr'], 300)}"))

    def step_video_x86(self) -> None:
        res = _run_video(self.tledge, self.inp / "bundle", self.inp / "video_x86.avi")
        self.facts["video"] = _slim(res)
        ok = res["rc"] == 0 and len(res["labels"]) == VIDEO_FRAMES
        self.add("run_video_json", "PASS" if ok else "FAIL", f"{len(res['labels'])} JSON lines for {VIDEO_FRAMES} frames of an MJPG AVI written on x86 (exit {res['rc']}, {res['seconds']} s)" + ("" if ok else f": {_tail(res['stderr'], 300)}"))

    def step_video_written_here(self) -> None:
        """ARM's OpenCV writes an MJPG AVI (trainer.synthetic, no TensorFlow) and tledge reads it back."""
        video = self.out / "video_arm.avi"
        code = f"from trainer.synthetic import make_video; make_video({str(video)!r}, frames_per_class=30, size=(160, 120))"
        made = _run([str(self.venv / "bin" / "python"), "-c", code])
        if made["rc"] != 0 or not video.is_file():
            self.add("video_write_read_arm", "FAIL", f"cannot write an MJPG AVI here: {_tail(made['stderr'], 300)}")
            return
        res = _run_video(self.tledge, self.inp / "bundle", video)
        ok = res["rc"] == 0 and len(res["labels"]) == VIDEO_FRAMES
        self.add("video_write_read_arm", "PASS" if ok else "FAIL", f"MJPG AVI written by ARM OpenCV ({video.stat().st_size} bytes) decoded: {len(res['labels'])} frames classified")

    def step_bench(self) -> None:
        res = _run([self.tledge, "bench", str(self.inp / "bundle"), "--threads", "1,2", "--runs", "20", "--warmup", "2", "--json"])
        rows = _json_lines(res["stdout"])
        self.facts["bench"] = rows
        ok = res["rc"] == 0 and len(rows) == 2
        p50 = ", ".join(f"{r.get('threads')} thr p50 {r.get('p50_ms', 0):.1f} ms" for r in rows)
        self.add("bench", "PASS" if ok else "FAIL", f"runs ({p50}); EMULATED under QEMU: the times mean nothing" + ("" if ok else f": {_tail(res['stderr'], 300)}"))

    def step_serve_without_extra(self) -> None:
        res = _run([self.tledge, "run", str(self.inp / "bundle"), "--source", str(self.inp / "video_x86.avi"), "--serve", "127.0.0.1:0", "--max-frames", "3", "--display", "off"])
        named = "tledge[serve]" in res["stderr"]
        ok = res["rc"] == 1 and named and "Traceback" not in res["stderr"]
        self.add("serve_needs_extra", "PASS" if ok else "FAIL", f"core only: --serve exits {res['rc']} and names the extra" if ok else f"exit {res['rc']}: {_tail(res['stderr'], 300)}")

    def step_install_serve(self) -> None:
        report = self.out / "pip-report-serve.json"
        res = _run([*self.pip, "install", "--report", str(report), f"{self.wheel}[serve]"])
        chosen = _chosen_wheels(report)
        self.facts["wheels_serve"] = chosen
        ok = res["rc"] == 0
        self.add("install_serve", "PASS" if ok else "FAIL", "pip install tledge[serve]: " + ", ".join(f"{k} {v['version']}" for k, v in sorted(chosen.items())) if ok else _tail(res["stderr"], 300))

    def step_serve(self) -> None:
        token = secrets.token_urlsafe(24)  # the live view refuses tokens under 16 characters
        env = dict(os.environ, TLEDGE_TOKEN=token)
        cmd = [self.tledge, "run", str(self.inp / "bundle"), "--source", str(self.inp / "video_x86.avi"), "--loop", "--serve", "127.0.0.1:0", "--display", "off", "--no-json"]
        err_path = self.out / "serve.stderr"
        with err_path.open("w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        answer, detail = None, ""
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                match = re.search(r"live view: (http://127\.0\.0\.1:\d+/)", err_path.read_text())
                if match:
                    answer, detail = _get_latest(match.group(1) + "api/latest", token)
                    if answer is not None:
                        break
                time.sleep(2)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
        stderr = err_path.read_text()
        if answer is not None and answer.get("top"):
            top = answer["top"][0]
            self.add("serve_api_latest", "PASS", f"/api/latest on 127.0.0.1 (token) answered: {top.get('label')} {top.get('score', 0):.3f}; SIGTERM exit {proc.returncode}")
        else:
            self.add("serve_api_latest", "FAIL", f"no answer from /api/latest ({detail}); exit {proc.returncode}: {_tail(stderr, 300)}")

    def step_gui_opencv_probe(self) -> None:
        """Why core depends on the headless build: the GUI wheel on a bare (Lite) rootfs."""
        venv = Path("/opt/gui-probe-venv")
        _run(["rm", "-rf", str(venv)])
        _run([sys.executable, "-m", "venv", str(venv)])
        inst = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--report", str(self.out / "pip-report-gui.json"), "opencv-python"])
        if inst["rc"] != 0:
            self.add("probe_opencv_gui_wheel", "info", f"pip install opencv-python failed: {_tail(inst['stderr'], 200)}")
            return
        version = _chosen_wheels(self.out / "pip-report-gui.json").get("opencv-python", {}).get("version", "?")
        imp = _run([str(venv / "bin" / "python"), "-c", "import cv2"])
        missing = re.findall(r"(lib[\w.+-]+\.so[.\d]*): cannot open shared object file", imp["stderr"])
        self.facts["gui_opencv_probe"] = {"version": version, "rc": imp["rc"], "stderr_tail": _tail(imp["stderr"], 400)}
        detail = f"opencv-python {version}: import cv2 " + (f"fails, missing {', '.join(missing) or _tail(imp['stderr'], 120)}" if imp["rc"] else "works")
        self.add("probe_opencv_gui_wheel", "info", detail)
        _run(["rm", "-rf", str(venv)])


def _os_release() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return "?"
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)', text, re.M)
    return match.group(1) if match else "?"


def _chosen_wheels(report: Path) -> dict:
    """name -> version and file name of what pip installed (from `pip install --report`)."""
    try:
        data = json.loads(report.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    chosen = {}
    for item in data.get("install", []):
        meta = item.get("metadata", {})
        url = item.get("download_info", {}).get("url", "")
        chosen[meta.get("name", "?").lower()] = {"version": meta.get("version", "?"), "file": url.rsplit("/", 1)[-1]}
    return chosen


def _get_latest(url: str, token: str) -> tuple[dict | None, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read()), f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, str(exc)


def device(work: Path) -> None:
    dev = Device(work)
    dev.out.mkdir(parents=True, exist_ok=True)
    try:
        dev.run_all()
    finally:
        dev.save()


# --------------------------------------------------------------------------- report


def _compare_predictions(name: str, ref: dict, dev: dict) -> dict:
    ref_rows = {r["image"]: r for r in ref.get("rows", [])}
    dev_rows = {r["image"]: r for r in dev.get("rows", [])}
    if not ref_rows or set(ref_rows) != set(dev_rows):
        return {"step": f"{name}_matches_x86", "status": "FAIL", "detail": f"images differ: x86 {sorted(ref_rows)} vs ARM {sorted(dev_rows)}"}
    worst, mismatched, decisions, pairs = 0.0, [], [], []
    for image, r in sorted(ref_rows.items()):
        d = dev_rows[image]
        diff = abs(r["score"] - d["score"])
        worst = max(worst, diff)
        pairs.append({"image": image, "x86": [r.get("top1", r["label"]), r["label"], r["score"]],
                      "arm": [d.get("top1", d["label"]), d["label"], d["score"]], "abs_diff": round(diff, 6)})
        if r.get("top1", r["label"]) != d.get("top1", d["label"]):
            mismatched.append(image)
        elif r["label"] != d["label"]:  # same class, one score each side of the bundle's threshold
            decisions.append(image)
    ok = not mismatched and worst <= SCORE_TOLERANCE
    detail = f"top-1 labels {len(ref_rows) - len(mismatched)}/{len(ref_rows)} equal, max |score diff| {worst:.4f} (tolerance {SCORE_TOLERANCE})"
    if mismatched:
        detail += f"; different: {', '.join(mismatched)}"
    if decisions:
        detail += f"; same class, decision differs at the threshold (scores within tolerance): {', '.join(decisions)}"
    return {"step": f"{name}_matches_x86", "status": "PASS" if ok else "FAIL", "detail": detail, "pairs": pairs}


def _compare_video(ref: dict, dev: dict) -> dict:
    a, b = ref.get("top1", ref.get("labels", [])), dev.get("top1", dev.get("labels", []))
    n = min(len(a), len(b))
    same = sum(1 for x, y in zip(a, b) if x == y)
    agreement = same / n if n else 0.0
    ok = n == VIDEO_FRAMES and agreement >= VIDEO_AGREEMENT_MIN
    decided = sum(1 for x, y in zip(ref.get("labels", []), dev.get("labels", [])) if x == y)
    return {"step": "run_video_matches_x86", "status": "PASS" if ok else "FAIL",
            "detail": f"per-frame top-1 agreement {same}/{n} = {agreement:.1%} (min {VIDEO_AGREEMENT_MIN:.0%}); decisions (with the bundle's thresholds) equal on {decided}/{n}"}


def report(works: list[Path], output: Path, meta: dict) -> int:
    suites = []
    failed = False
    for work in works:
        suite = work.name
        ref_path, dev_path = work / "out" / "reference.json", work / "out" / "device.json"
        if not dev_path.is_file():
            suites.append({"suite": suite, "steps": [{"step": "device", "status": "FAIL", "detail": "the chroot run wrote no device.json"}]})
            failed = True
            continue
        dev = json.loads(dev_path.read_text())
        ref = json.loads(ref_path.read_text()) if ref_path.is_file() else {}
        facts = dev["facts"]
        compare = {
            "predict_google": lambda: _compare_predictions("predict_google", ref.get("google", {}), facts["predict_google"]),
            "predict_bundle": lambda: _compare_predictions("predict_bundle", ref.get("bundle", {}), facts["predict_bundle"]),
            "run_video_json": lambda: _compare_video(ref.get("video", {}), facts["video"]),
        }
        steps = []
        for step in dev["steps"]:
            steps.append(step)
            if step["step"] in compare:  # the x86 comparison goes right after the ARM run
                steps.append(compare[step["step"]]())
        failed |= any(s["status"] == "FAIL" for s in steps)
        suites.append({"suite": suite, "os": facts.get("os"), "machine": facts.get("machine"), "python": facts.get("python"), "wheels": facts.get("wheels_core", {}), "wheels_serve": facts.get("wheels_serve", {}), "opencv": facts.get("opencv"), "bench_emulated_meaningless": facts.get("bench"), "gui_opencv_probe": facts.get("gui_opencv_probe"), "steps": steps})
    result = {**meta, "score_tolerance": SCORE_TOLERANCE, "video_frames": VIDEO_FRAMES, "passed": not failed, "suites": suites}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, output)
    _print_table(result)
    print(f"\nwritten: {output}")
    return 1 if failed else 0


def _print_table(result: dict) -> None:
    print(f"\ntledge on emulated arm64 (QEMU user mode), {result['date']}, tledge {result.get('tledge_version')}")
    for suite in result["suites"]:
        print(f"\n== {suite['suite']}: {suite.get('os')} ({suite.get('machine')}), Python {suite.get('python')}")
        for s in suite["steps"]:
            print(f"  {s['status']:<5} {s['step']:<28} {s['detail']}")
    print(f"\nOVERALL: {'PASS' if result['passed'] else 'FAIL'}")


def markdown(results: list[Path]) -> str:
    """The README table: one row per step, one column per suite (from result JSON files)."""
    suites = [(json.loads(p.read_text()), suite) for p in results for suite in json.loads(p.read_text())["suites"]]
    names: list[str] = []
    for _, suite in suites:
        names += [s["step"] for s in suite["steps"] if s["step"] not in names]
    head = ["step"] + [f"{s['suite']} ({s.get('python')}, {r['date'][:10]})" for r, s in suites]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name in names:
        cells = []
        for _, suite in suites:
            step = next((s for s in suite["steps"] if s["step"] == name), None)
            cells.append("-" if step is None else f"{step['status']}: {step['detail']}".replace("|", "/"))
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("reference")
    p.add_argument("work", type=Path)
    p.add_argument("--tledge", required=True)
    p = sub.add_parser("device")
    p.add_argument("work", type=Path)
    p = sub.add_parser("report")
    p.add_argument("works", type=Path, nargs="+")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--meta", default="{}", help="JSON object merged into the result (host facts).")
    p = sub.add_parser("markdown", help="print the README table of result files")
    p.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    if args.cmd == "markdown":
        print(markdown(args.results))
        return 0
    if args.cmd == "reference":
        reference(args.work, args.tledge)
    elif args.cmd == "device":
        device(args.work)
    else:
        meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **json.loads(args.meta)}
        return report(args.works, args.output, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
