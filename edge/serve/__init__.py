"""Live view in the browser: `tledge run MODEL --serve [HOST:]PORT`.

    options.py      ServeOptions, bind parsing, token rules (pure)
    auth.py         Host allow-list, Sec-Fetch-Site, bearer/cookie token, failed-login limit (pure)
    bridge.py       the inference thread -> server thread hand-over (never blocks inference)
    stream.py       the ticker, MJPEG and server-sent events, viewer caps
    connections.py  connection cap, header-read timeout, one-line logging of bad requests
    app.py          the aiohttp application: guard middleware, route table, handlers
    labelling.py    the labelling panel's endpoints (run --label-into): list, image, file, discard
    sink.py         LiveViewSink: the pipeline sink that runs the server in its own thread
    static/         the page (index.html, app.js, style.css)

Importing this package loads neither aiohttp nor OpenCV; names are resolved on first use.
"""

from __future__ import annotations

from edge.lazy import lazy_getattr

_EXPORTS = {
    "ServeOptions": "edge.serve.options",
    "parse_bind": "edge.serve.options",
    "is_loopback": "edge.serve.options",
    "is_all_interfaces": "edge.serve.options",
    "LiveViewSink": "edge.serve.sink",
    "encode_frame": "edge.serve.stream",
    "BOUNDARY": "edge.serve.stream",
    "ASSETS": "edge.serve.app",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
