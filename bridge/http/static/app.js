// vtla-bridge web UI: plain browser JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SIDE_PX = 1280; // larger images are downscaled in the browser before upload
const COLORS = ["#d62728", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#ff7f0e"];
const state = { imageUrl: null, objects: [], points: [], actionNames: null };

// ------------------------------------------------------------------ helpers

function showMessage(text) { $("message").textContent = text || ""; }

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["X-Moondream-Auth"] = key;
  return h;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${(body.error && body.error.message) || body.detail || response.statusText}`;
  } catch (_) {
    return `${response.status}: ${response.statusText}`;
  }
}

// Moondream sampling settings from the Settings panel; empty fields keep the server's defaults.
function withSettings(body) {
  const settings = {};
  const read = (id, key, parse) => { const v = $(id).value.trim(); if (v !== "") settings[key] = parse(v); };
  read("set-temperature", "temperature", Number);
  read("set-max-tokens", "max_tokens", (v) => parseInt(v, 10));
  read("set-max-objects", "max_objects", (v) => parseInt(v, 10));
  return Object.keys(settings).length ? { ...body, settings } : body;
}

async function postJson(path, body) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

// Server-Sent Events over fetch: calls onChunk(text) per chunk, returns the final event.
async function postStream(path, body, onChunk) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify({ ...body, stream: true }) });
  if (!response.ok) throw new Error(await errorText(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ")) continue;
      const data = JSON.parse(event.slice(6));
      if (data.error) throw new Error(`${data.error.code}: ${data.error.message}`);
      if (data.chunk) onChunk(data.chunk);
      if (data.completed) return data;
    }
  }
  throw new Error("the stream ended early");
}

function requireImage() {
  if (!state.imageUrl) throw new Error("load an image first");
  return state.imageUrl;
}

async function busy(button, work) {
  showMessage("");
  button.disabled = true;
  try { await work(); } catch (err) { showMessage(err.message); } finally { button.disabled = false; }
}

// ------------------------------------------------------------------ image input

function setImage(url, info) {
  state.imageUrl = url;
  state.objects = []; state.points = [];
  $("detect-list").innerHTML = ""; $("point-list").innerHTML = "";
  $("preview").src = url;
  $("stage").hidden = false;
  $("image-info").textContent = info;
}

function loadFile(file) {
  if (!file || !file.type.startsWith("image/")) { showMessage("not an image file"); return; }
  const reader = new FileReader();
  reader.onload = () => {
    const img = new Image();
    img.onload = () => {
      const passThrough = /^image\/(jpeg|png)$/.test(file.type) && Math.max(img.width, img.height) <= MAX_SIDE_PX;
      const url = passThrough ? reader.result : downscale(img);
      setImage(url, `${file.name}: ${img.width}×${img.height}${passThrough ? "" : " (downscaled)"}`);
    };
    img.onerror = () => showMessage("the browser cannot read this image");
    img.src = reader.result;
  };
  reader.readAsDataURL(file);
}

function downscale(source, width = source.width || source.videoWidth, height = source.height || source.videoHeight) {
  const scale = Math.min(1, MAX_SIDE_PX / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * scale); canvas.height = Math.round(height * scale);
  canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/jpeg", 0.9);
}

async function startWebcam() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    $("webcam").srcObject = stream; $("webcam").hidden = false; $("snap-btn").hidden = false;
  } catch (err) { showMessage(`webcam: ${err.message}`); }
}

function snapWebcam() {
  const video = $("webcam");
  setImage(downscale(video, video.videoWidth, video.videoHeight), `webcam: ${video.videoWidth}×${video.videoHeight}`);
  video.srcObject.getTracks().forEach((t) => t.stop());
  video.hidden = true; $("snap-btn").hidden = true;
}

// ------------------------------------------------------------------ overlay (boxes and points)

function drawOverlay() {
  const img = $("preview"), canvas = $("overlay");
  const w = img.clientWidth, h = img.clientHeight;
  canvas.width = w; canvas.height = h;
  canvas.style.width = `${w}px`; canvas.style.height = `${h}px`;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  ctx.lineWidth = 2;
  state.objects.forEach((o, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.strokeRect(o.x_min * w, o.y_min * h, (o.x_max - o.x_min) * w, (o.y_max - o.y_min) * h);
  });
  state.points.forEach((p, i) => {
    ctx.fillStyle = COLORS[i % COLORS.length];
    ctx.beginPath(); ctx.arc(p.x * w, p.y * h, 5, 0, 2 * Math.PI); ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.stroke();
  });
  canvas.dataset.boxes = String(state.objects.length);
  canvas.dataset.points = String(state.points.length);
}

const fmt = (v) => Number(v).toFixed(3);

function listItems(list, items, describe) {
  list.innerHTML = "";
  items.forEach((item, i) => {
    const li = document.createElement("li");
    li.textContent = describe(item);
    li.style.color = COLORS[i % COLORS.length];
    list.appendChild(li);
  });
  if (!items.length) list.innerHTML = "<li class=muted>nothing found</li>";
  list.dataset.state = "done";
  list.dataset.count = String(items.length);
}

// ------------------------------------------------------------------ Moondream ops

async function caption(length, button) {
  const out = $("caption-text");
  await busy(button, async () => {
    out.textContent = ""; out.dataset.state = "streaming"; out.dataset.length = length;
    try {
      const final = await postStream("/v1/caption", withSettings({ image_url: requireImage(), length }), (c) => { out.textContent += c; });
      out.textContent = final.caption;
      out.dataset.state = "done";
      out.title = `finish: ${final.finish_reason}, ${final.metrics.output_tokens} tokens`;
    } catch (err) { out.dataset.state = "error"; throw err; }
  });
}

async function ask(event) {
  event.preventDefault();
  const out = $("answer-text");
  await busy(event.submitter || event.target, async () => {
    out.textContent = ""; out.dataset.state = "streaming";
    try {
      const body = withSettings({ image_url: requireImage(), question: $("question").value });
      const final = await postStream("/v1/query", body, (c) => { out.textContent += c; });
      out.textContent = final.answer; out.dataset.state = "done";
    } catch (err) { out.dataset.state = "error"; throw err; }
  });
}

async function detect(event) {
  event.preventDefault();
  await busy(event.submitter || event.target, async () => {
    const result = await postJson("/v1/detect", withSettings({ image_url: requireImage(), object: $("detect-object").value }));
    state.objects = result.objects;
    drawOverlay();
    listItems($("detect-list"), result.objects, (o) => `box (${fmt(o.x_min)}, ${fmt(o.y_min)}) – (${fmt(o.x_max)}, ${fmt(o.y_max)})`);
  });
}

async function point(event) {
  event.preventDefault();
  await busy(event.submitter || event.target, async () => {
    const result = await postJson("/v1/point", withSettings({ image_url: requireImage(), object: $("point-object").value }));
    state.points = result.points;
    drawOverlay();
    listItems($("point-list"), result.points, (p) => `point (${fmt(p.x)}, ${fmt(p.y)})`);
  });
}

// ------------------------------------------------------------------ VTLA act

function renderAction(result) {
  const [dx, dy, dz, droll, dpitch, dyaw, gripper] = result.action;
  const chunk = result.actions; // H x 7
  // arrow length: the largest translation in the chunk reaches the ring
  const scaleT = 48 / Math.max(1e-9, ...chunk.map((a) => Math.hypot(a[0], a[1])));
  $("arrow").setAttribute("x2", String(dx * scaleT)); $("arrow").setAttribute("y2", String(-dy * scaleT));
  $("arrow-tip").setAttribute("cx", String(dx * scaleT)); $("arrow-tip").setAttribute("cy", String(-dy * scaleT));
  const mm = (v) => `${(v * 1000).toFixed(2)} mm`, deg = (v) => `${(v * 180 / Math.PI).toFixed(2)}°`;
  $("dz-text").textContent = `dz ${mm(dz)}`;
  $("translation-text").textContent = `dx ${mm(dx)}  dy ${mm(dy)}  dz ${mm(dz)}`;
  $("rotation-text").textContent = `roll ${deg(droll)}  pitch ${deg(dpitch)}  yaw ${deg(dyaw)}`;
  $("gripper-bar").style.width = `${Math.max(0, Math.min(1, gripper)) * 100}%`;
  $("gripper-text").textContent = gripper.toFixed(3);
  plotChunk(chunk);
  $("chunk-caption").textContent = `action chunk: ${chunk.length} steps × ${chunk[0].length} dims, each scaled to its own range`;
  $("action-view").dataset.state = "done";
  $("action-view").dataset.steps = String(chunk.length);
}

function plotChunk(chunk) {
  const canvas = $("chunk-plot"), ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 8;
  ctx.clearRect(0, 0, w, h);
  const names = state.actionNames || ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"];
  const steps = chunk.length, dims = chunk[0].length;
  for (let d = 0; d < dims; d++) {
    const values = chunk.map((a) => a[d]);
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    ctx.strokeStyle = COLORS[d % COLORS.length]; ctx.lineWidth = 1.5; ctx.beginPath();
    values.forEach((v, t) => {
      const x = pad + (steps > 1 ? t / (steps - 1) : 0.5) * (w - 2 * pad - 50);
      const y = h - pad - ((v - lo) / span) * (h - 2 * pad);
      if (t === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = COLORS[d % COLORS.length]; ctx.font = "10px sans-serif";
    ctx.fillText(names[d] || `a${d}`, w - 48, 12 + d * 12);
  }
}

async function act(event) {
  event.preventDefault();
  await busy(event.submitter || event.target, async () => {
    const body = { image_url: requireImage() };
    const instruction = $("instruction").value.trim();
    if (instruction) body.instruction = instruction;
    renderAction(await postJson("/v1/act", body));
  });
}

// ------------------------------------------------------------------ status strip

function pill(el, text, cls) { el.textContent = text; el.className = `pill ${cls || ""}`; }

async function refreshStatus() {
  try {
    const s = await (await fetch("/api/status")).json();
    const up = s.server.reachable;
    pill($("status-server"), up ? `server: ${s.server.status}` : "server: unreachable", up && s.server.status === "ok" ? "ok" : "bad");
    const models = $("status-models");
    models.innerHTML = "";
    s.models.forEach((m) => {
      const span = document.createElement("span");
      pill(span, `${m.role}: ${m.name}${m.random_weights ? " (random weights)" : ""}`, m.random_weights ? "warn" : (m.loaded ? "ok" : "bad"));
      models.appendChild(span);
      if (m.action && m.action.names) state.actionNames = m.action.names;
    });
    // ops this server does not serve (e.g. [vlm] enabled = false): say so instead of failing on click
    const served = new Set(s.server.ops);
    [["vlm-panel", "caption"], ["act-panel", "act"]].forEach(([panel, op]) => {
      const off = up && !served.has(op);
      $(panel).classList.toggle("off", off);
      $(panel).querySelectorAll("button").forEach((b) => { if (off) b.disabled = true; else if (b.dataset.off) b.disabled = false; b.dataset.off = off ? "1" : ""; });
    });
    pill($("status-device"), s.device ? `device: ${s.device}/${s.dtype}` : "device: –");
    pill($("status-queue"), `queue: ${s.queue_depth ?? "–"}`);
    const lat = Object.entries(s.latency_ms).map(([op, v]) => `${op} ${v.p50_ms.toFixed(0)} ms`).join(", ");
    pill($("status-latency"), lat ? `p50: ${lat}` : "p50: –");
  } catch (_) {
    pill($("status-server"), "companion unreachable", "bad");
  }
}

// ------------------------------------------------------------------ wiring

function init() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => loadFile(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); loadFile(e.dataTransfer.files[0]); });
  $("webcam-btn").addEventListener("click", startWebcam);
  $("snap-btn").addEventListener("click", snapWebcam);
  $("clear-overlay").addEventListener("click", () => { state.objects = []; state.points = []; drawOverlay(); });
  $("preview").addEventListener("load", drawOverlay);
  window.addEventListener("resize", drawOverlay);
  document.querySelectorAll(".caption-btn").forEach((b) => b.addEventListener("click", () => caption(b.dataset.length, b)));
  $("query-form").addEventListener("submit", ask);
  $("detect-form").addEventListener("submit", detect);
  $("point-form").addEventListener("submit", point);
  $("act-form").addEventListener("submit", act);
  const savedKey = localStorage.getItem("vtla-api-key");
  if (savedKey) $("api-key").value = savedKey;
  $("api-key").addEventListener("change", () => localStorage.setItem("vtla-api-key", $("api-key").value.trim()));
  refreshStatus();
  setInterval(refreshStatus, 2000);
}

init();
