// tledge live view: the MJPEG <img>, and the prediction fed by server-sent events.
// The access token travels in an HttpOnly cookie the server set: this script never sees it.
// Panel and picture show the same frame: each event is the result of the frame last published.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let labelItems = new Map();  // label -> <li> in the labels list

  function setStatus(state, text) {
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text;
  }

  function showModel(model) {
    $("model-name").textContent = model.name;
    document.title = "tledge · " + model.name;
    const list = $("labels");
    list.replaceChildren();
    labelItems = new Map();
    for (const label of model.labels) {
      const li = document.createElement("li");
      li.textContent = label;
      list.appendChild(li);
      labelItems.set(label, li);
    }
    $("label-count").textContent = "(" + model.labels.length + ")";
  }

  function percent(score) {
    return (100 * score).toFixed(1) + "%";
  }

  function showBars(top) {
    const bars = $("bars");
    bars.replaceChildren();
    for (const entry of top) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = entry.label;
      name.title = entry.label;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.width = Math.max(0, Math.min(100, 100 * entry.score)) + "%";
      track.appendChild(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = percent(entry.score);
      li.append(name, track, value);
      bars.appendChild(li);
    }
  }

  function showResult(result) {
    $("top-label").textContent = result.label === null ? "(below threshold)" : result.label;
    showBars(result.top);
    $("fps").textContent = result.fps.toFixed(1);
    $("latency").textContent = result.latency_ms.toFixed(1) + " ms";
    $("frame").textContent = String(result.index);
    $("dropped").textContent = String(result.dropped);
    for (const [label, li] of labelItems) {
      li.classList.toggle("current", label === result.label);
    }
  }

  function startStream() {
    const img = $("stream");
    img.onerror = () => {
      setStatus("lost", "video lost, retrying");
      setTimeout(() => { img.src = "stream.mjpg?t=" + Date.now(); }, 2000);
    };
    img.src = "stream.mjpg";
  }

  function startEvents() {
    const events = new EventSource("api/events");
    events.onopen = () => setStatus("live", "live");
    events.onerror = () => setStatus("lost", "reconnecting");
    events.onmessage = (event) => {
      setStatus("live", "live");
      showResult(JSON.parse(event.data));
    };
  }

  fetch("api/model")
    .then((response) => (response.ok ? response.json() : Promise.reject(new Error(response.status))))
    .then(showModel)
    .catch(() => setStatus("lost", "cannot read the model"));
  startStream();
  startEvents();
})();
