"""The live view's labelling panel over real HTTP: list, image, file, discard; traversal,
bad labels and the CSRF guard on the state-changing POSTs."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest
from inbox_helpers import fill_inbox

from edge import inbox
from edge.serve import LiveViewSink, ServeOptions
from edge.serve.labelling import LabelDesk

TOKEN = "labelling-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POST_HEADERS = {**AUTH, "Content-Type": "application/json", "X-Tledge-Action": "1"}


def call(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw request; the path goes on the wire exactly as written."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def post_label(port: int, name: str, label: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    status, _, body = call(port, "POST", f"/api/uncertain/{name}/label", headers if headers is not None else POST_HEADERS,
                           json.dumps({"label": label}).encode())
    return status, json.loads(body or b"{}")


@pytest.fixture()
def desk(tmp_path: Path) -> LabelDesk:
    (tmp_path / "data" / "mug").mkdir(parents=True)  # a class already in DATA
    return LabelDesk(tmp_path / "inbox", tmp_path / "data", ("red", "green", "blue", "gray"))


@pytest.fixture()
def live(colour_info, desk: LabelDesk) -> Iterator[LiveViewSink]:
    with LiveViewSink(ServeOptions(port=0, token=TOKEN, auth_failures_per_minute=10_000), colour_info, desk) as sink:
        yield sink


def test_list_image_file_and_discard(live: LiveViewSink, desk: LabelDesk) -> None:
    frames = fill_inbox(desk.inbox_dir, ["red", "green", "blue"])
    status, _, body = call(live.port, "GET", "/api/uncertain", AUTH)
    listing = json.loads(body)
    assert status == 200 and [f["name"] for f in listing["frames"]] == [f.name for f in frames]
    assert listing["labels"] == ["red", "green", "blue", "gray", "mug"]
    assert listing["frames"][1]["top"][0] == {"label": "green", "score": pytest.approx(0.55)}
    assert listing["frames"][1]["reasons"] == ["small_margin", "label_flip"]

    status, headers, jpeg = call(live.port, "GET", f"/api/uncertain/{frames[0].name}", AUTH)
    assert status == 200 and headers["content-type"] == "image/jpeg" and jpeg == frames[0].path.read_bytes()

    assert post_label(live.port, frames[0].name, "gray") == (200, {"filed": frames[0].name, "label": "gray", "folder": "gray"})
    assert (desk.data_dir / "gray" / frames[0].name).read_bytes() == jpeg
    assert post_label(live.port, frames[1].name, "kettle")[0] == 200  # a new label makes a new class folder
    assert (desk.data_dir / "kettle" / frames[1].name).is_file()

    status, _, body = call(live.port, "POST", f"/api/uncertain/{frames[2].name}/discard", POST_HEADERS, b"{}")
    assert status == 200 and json.loads(body) == {"discarded": frames[2].name}
    assert os.listdir(desk.inbox_dir) == [inbox.LOG_NAME]
    assert sorted(os.listdir(desk.data_dir)) == ["gray", "kettle", "mug"]
    # Done once: a second click on the same frame is a 404, not a second copy.
    assert post_label(live.port, frames[0].name, "red")[0] == 404
    assert call(live.port, "GET", f"/api/uncertain/{frames[0].name}", AUTH)[0] == 404


TRAVERSALS = [
    "/api/uncertain/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/uncertain/%2E%2E%2Fdata%2Fmug",
    "/api/uncertain/../../etc/passwd",
    "/api/uncertain/labelled.jsonl",
    "/api/uncertain/{name}%2F..%2F..%2Fsecret.txt",
    "/api/uncertain/..%5C{name}",
    "/api/uncertain/{json}",
    "/api/uncertain/%2Fetc%2Fpasswd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_the_image_endpoint_serves_only_frames_inside_dir(live: LiveViewSink, desk: LabelDesk, tmp_path: Path, path: str) -> None:
    [frame] = fill_inbox(desk.inbox_dir, ["red"])
    (tmp_path / "secret.txt").write_text("SECRET")
    url = path.format(name=frame.name, json=inbox.sidecar_name(frame.name))
    status, _, body = call(live.port, "GET", url, AUTH)
    assert status == 404, (url, status, body)
    assert b"SECRET" not in body and b"root:" not in body
    status, _, body = call(live.port, "POST", url + "/label", POST_HEADERS, b'{"label": "red"}')
    assert status in (404, 405) and not (desk.data_dir / "red").exists()


def test_a_symlinked_frame_is_not_served(live: LiveViewSink, desk: LabelDesk, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("SECRET")
    desk.inbox_dir.mkdir()
    name = "20261129-101500-f0000042-1a2b3c.jpg"
    (desk.inbox_dir / name).symlink_to(tmp_path / "secret.txt")
    (desk.inbox_dir / inbox.sidecar_name(name)).write_text('{"top": []}')
    status, _, body = call(live.port, "GET", f"/api/uncertain/{name}", AUTH)
    assert status == 404 and b"SECRET" not in body
    assert post_label(live.port, name, "red")[0] == 404 and (tmp_path / "secret.txt").exists()


@pytest.mark.parametrize("label", ["../escape", "a/b", "..", ".", ".hidden", "", " red", "train", "x" * 65, "a\\b", 7, None])
def test_bad_label_names_are_refused_and_nothing_moves(live: LiveViewSink, desk: LabelDesk, tmp_path: Path, label: object) -> None:
    [frame] = fill_inbox(desk.inbox_dir, ["red"])
    status, body = post_label(live.port, frame.name, label)
    assert status == 400 and body["error"]
    assert sorted(os.listdir(desk.data_dir)) == ["mug"] and not (tmp_path / "escape").exists()
    assert [f.name for f in inbox.list_frames(desk.inbox_dir).frames] == [frame.name]


@pytest.mark.parametrize(
    "headers",
    [
        {**AUTH, "Content-Type": "application/json"},  # no X-Tledge-Action
        {**AUTH, "Content-Type": "application/x-www-form-urlencoded", "X-Tledge-Action": "1"},  # what a <form> sends
        {**AUTH, "Content-Type": "text/plain", "X-Tledge-Action": "1"},
        {**POST_HEADERS, "Origin": "http://evil.example"},
        {**POST_HEADERS, "Origin": "null"},
        {**POST_HEADERS, "Origin": "http://127.0.0.1:1"},  # another port: another origin
        {**POST_HEADERS, "Sec-Fetch-Site": "cross-site"},
        {**POST_HEADERS, "Sec-Fetch-Site": "same-site"},
    ],
    ids=["no-action-header", "form-content-type", "text-plain", "foreign-origin", "null-origin", "other-port", "cross-site", "same-site"],
)
def test_state_changes_without_csrf_proof_are_refused(live: LiveViewSink, desk: LabelDesk, headers: dict[str, str]) -> None:
    [frame] = fill_inbox(desk.inbox_dir, ["red"])
    status, body = post_label(live.port, frame.name, "red", headers)
    assert status == 403, body
    status, _, _ = call(live.port, "POST", f"/api/uncertain/{frame.name}/discard", headers, b"{}")
    assert status == 403
    assert [f.name for f in inbox.list_frames(desk.inbox_dir).frames] == [frame.name]
    assert not (desk.data_dir / "red").exists()


def test_the_same_origin_and_the_token_are_both_needed(live: LiveViewSink, desk: LabelDesk) -> None:
    [frame] = fill_inbox(desk.inbox_dir, ["red"])
    no_token = {k: v for k, v in POST_HEADERS.items() if k != "Authorization"}
    assert post_label(live.port, frame.name, "red", no_token)[0] == 401
    same_origin = {**POST_HEADERS, "Origin": f"http://127.0.0.1:{live.port}", "Host": f"127.0.0.1:{live.port}", "Sec-Fetch-Site": "same-origin"}
    assert post_label(live.port, frame.name, "red", same_origin)[0] == 200


def test_a_body_too_large_or_not_json_is_a_400(live: LiveViewSink, desk: LabelDesk) -> None:
    [frame] = fill_inbox(desk.inbox_dir, ["red"])
    for body in (b"not json", b'{"label": "' + b"x" * 10_000 + b'"}', b'["red"]'):
        status, _, _ = call(live.port, "POST", f"/api/uncertain/{frame.name}/label", POST_HEADERS, body)
        assert status == 400
    assert len(inbox.list_frames(desk.inbox_dir).frames) == 1


def test_without_label_into_there_is_no_panel(colour_info) -> None:
    with LiveViewSink(ServeOptions(port=0, token=TOKEN), colour_info) as sink:
        assert call(sink.port, "GET", "/api/uncertain", AUTH)[0] == 404
        assert call(sink.port, "POST", "/api/uncertain/x/label", POST_HEADERS, b"{}")[0] == 404


def test_run_label_into_serves_the_panel_over_a_real_run(colour_model, colour_video, tmp_path: Path) -> None:
    """The whole device side through the CLI: run saves uncertain frames, the panel files one."""
    from test_cli import read_url, start_run

    model, labels = colour_model
    folder, data = tmp_path / "inbox", tmp_path / "data"
    process = start_run(model, labels, colour_video, "--serve", "127.0.0.1:0", "--save-uncertain", str(folder),
                        "--uncertain-margin", "1", "--save-rate", "600", "--label-into", str(data), env={"TLEDGE_TOKEN": TOKEN})
    lines: list[str] = []
    try:
        port = int(read_url(process, lines).rstrip("/").rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        frames: list = []
        while not frames and time.monotonic() < deadline:
            frames = json.loads(call(port, "GET", "/api/uncertain", AUTH)[2])["frames"]
            time.sleep(0.2)
        assert frames, "no uncertain frame was listed:\n" + "".join(lines)
        assert "small_margin" in frames[0]["reasons"]  # margin 1: every frame
        status, body = post_label(port, frames[0]["name"], "red")
        assert status == 200, body
        assert (data / "red" / frames[0]["name"]).is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, "".join(lines)
    assert any("saved" in line and "uncertain frame(s)" in line for line in lines), "".join(lines)
