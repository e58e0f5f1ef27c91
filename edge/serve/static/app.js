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

  // Hot updates (run --watch): the model in use, or why a new bundle was refused.
  let modelKey = null;  // name + labels last shown
  let lastModelTag;  // the `model` field of the results, set only by hot updates

  function showUpdate(update) {
    const el = $("model-update");
    if (!update) { el.hidden = true; return; }
    el.hidden = false;
    el.dataset.status = update.status;
    el.textContent = update.status === "rejected"
      ? "update refused (" + update.bundle + "): " + update.error + " - still running " + update.model
      : "updated to " + update.model + (update.schema_changed ? " (labels or input changed)" : "") + " at " + update.at;
  }

  function refreshModel() {
    return fetch("api/model", { credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : Promise.reject(new Error(response.status))))
      .then((model) => {
        const key = JSON.stringify([model.name, model.labels]);
        if (key !== modelKey) { modelKey = key; showModel(model); }
        showUpdate(model.update);
      });
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
    if (result.model !== undefined && result.model !== lastModelTag) {
      if (lastModelTag !== undefined) refreshModel().catch(() => {});
      lastModelTag = result.model;
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

  // The labelling panel (run --label-into): present only when api/uncertain answers.
  const ACTION_HEADERS = { "Content-Type": "application/json", "X-Tledge-Action": "1" };  // the server's CSRF check

  function showMessage(text) {
    $("uncertain-message").textContent = text;
  }

  function post(path, body) {
    return fetch(path, { method: "POST", headers: ACTION_HEADERS, body: JSON.stringify(body), credentials: "same-origin" })
      .then((response) => response.json().then((data) => (response.ok ? data : Promise.reject(new Error(data.error || response.status)))));
  }

  function act(li, path, body, done) {
    for (const el of li.querySelectorAll("button, input")) el.disabled = true;
    post(path, body)
      .then((data) => { li.remove(); showMessage(done(data)); $("uncertain-count").textContent = "(" + $("uncertain-list").children.length + ")"; })
      .catch((error) => { showMessage(error.message); for (const el of li.querySelectorAll("button, input")) el.disabled = false; });
  }

  function button(text, className, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    if (className) b.className = className;
    b.addEventListener("click", onClick);
    return b;
  }

  function frameCard(frame, labels) {
    const li = document.createElement("li");
    li.dataset.name = frame.name;
    const base = "api/uncertain/" + encodeURIComponent(frame.name);
    const img = document.createElement("img");
    img.src = base;
    img.alt = "saved frame " + frame.name;
    const why = document.createElement("p");
    why.className = "why";
    why.textContent = frame.top.map((t) => t.label + " " + percent(t.score)).join(" · ") + " — " + frame.reasons.map((r) => r.replace(/_/g, " ")).join(", ");
    const actions = document.createElement("div");
    actions.className = "actions";
    const filed = (data) => "filed " + data.filed + " as " + data.label;
    for (const label of labels) {
      actions.appendChild(button(label, "", () => act(li, base + "/label", { label: label }, filed)));
    }
    const input = document.createElement("input");
    input.placeholder = "new label";
    input.setAttribute("aria-label", "new label for " + frame.name);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && input.value) act(li, base + "/label", { label: input.value }, filed);
    });
    actions.appendChild(input);
    actions.appendChild(button("file", "", () => act(li, base + "/label", { label: input.value }, filed)));
    actions.appendChild(button("discard", "discard", () => act(li, base + "/discard", {}, (d) => "discarded " + d.discarded)));
    li.append(img, why, actions);
    return li;
  }

  function showUncertain(body) {
    $("uncertain").hidden = false;
    const list = $("uncertain-list");
    const active = document.activeElement;
    if (active && active.tagName === "INPUT" && list.contains(active)) return;  // the user is typing a label
    const shown = new Set([...list.children].map((li) => li.dataset.name));
    const wanted = new Set(body.frames.map((f) => f.name));
    for (const li of [...list.children]) if (!wanted.has(li.dataset.name)) li.remove();
    for (const frame of body.frames) if (!shown.has(frame.name)) list.appendChild(frameCard(frame, body.labels));
    $("uncertain-count").textContent = "(" + body.frames.length + ")";
  }

  function pollUncertain() {
    fetch("api/uncertain")
      .then((response) => {
        if (response.status === 404) return null;  // no --label-into: no panel
        return response.ok ? response.json() : Promise.reject(new Error(response.status));
      })
      .then((body) => {
        if (body === null) return;
        showUncertain(body);
        setTimeout(pollUncertain, 3000);
      })
      .catch(() => setTimeout(pollUncertain, 5000));
  }

  refreshModel().catch(() => setStatus("lost", "cannot read the model"));
  setInterval(() => refreshModel().catch(() => {}), 5000);  // a refused update changes no result: look now and then
  startStream();
  startEvents();
  pollUncertain();
})();
