// sam2-fast serve: the page. Plain JavaScript over the JSON API (see /docs); no build step.
"use strict";

const PALETTE = [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211],
  [0, 206, 209], [255, 140, 0], [199, 21, 133], [127, 255, 0], [70, 130, 180]];
const $ = (id) => document.getElementById(id);
const view = $("view"), overlay = $("overlay");

// everything the page knows; window.sam2 lets tests and the benchmark read it
const S = {
  kind: null, id: null, width: 0, height: 0, numFrames: 1, fps: 24, frame: 0,
  objects: [], selected: null, nextObj: 1,
  masks: {},        // frame -> obj id -> COCO RLE
  busy: false, tracked: false, frameImage: null,
  timings: [],      // milliseconds from a click to its overlay on screen
};
window.sam2 = S;

// ------------------------------------------------------------------ requests
function headers(extra) {
  const h = Object.assign({}, extra || {});
  const token = $("token").value || sessionStorage.getItem("sam2-token");
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

async function errorText(response) {
  let detail = response.statusText;
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail
      : (body.detail || []).map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  } catch (e) { /* not JSON */ }
  if (response.status === 401) { $("token-box").hidden = false; }
  return `${response.status}: ${detail}`;
}

function upload(path, file, onUploaded) {
  // XMLHttpRequest, not fetch: it reports upload progress
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress(e.loaded / e.total); };
    xhr.upload.onload = onUploaded;
    xhr.onerror = () => reject(new Error("the upload failed (network error)"));
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 200) resolve(body);
      else {
        if (xhr.status === 401) $("token-box").hidden = false;
        reject(new Error(`${xhr.status}: ${typeof body.detail === "string" ? body.detail : xhr.statusText}`));
      }
    };
    const form = new FormData();
    form.append("file", file);
    xhr.send(form);
  });
}

// ------------------------------------------------------------------ status
function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function progress(fraction) {  // null: indeterminate, undefined: hidden
  const bar = $("progress");
  bar.hidden = fraction === undefined;
  if (fraction === null) bar.removeAttribute("value"); else if (fraction !== undefined) bar.value = fraction;
}

function setBusy(busy) {
  S.busy = busy;
  document.body.dataset.state = busy ? "busy" : "ready";
  const none = !S.id;
  $("add-object").disabled = busy || none;
  $("clear-object").disabled = busy || none || S.selected === null;
  $("track").disabled = busy || !S.objects.some((o) => Object.keys(o.prompts).length);
  for (const b of document.querySelectorAll(".export")) b.disabled = busy || !S.tracked;
}

async function run(message, work) {
  if (S.busy) return;
  setBusy(true);
  status(message);
  progress(null);
  try {
    await work();
    progress(undefined);
  } catch (e) {
    progress(undefined);
    status(e.message, true);
  } finally {
    setBusy(false);
  }
}

// ------------------------------------------------------------------ masks
function rleCounts(s) {  // pycocotools' compressed counts string -> run lengths
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1, c = 0;
    while (more) {
      c = s.charCodeAt(p++) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function paintRle(data, rle, color) {  // column-major runs, starting with background
  const [h, w] = rle.size;
  const counts = rleCounts(rle.counts);
  let i = 0, area = 0;
  for (let r = 0; r < counts.length; r++) {
    const end = i + counts[r];
    if (r % 2 === 1) {
      area += counts[r];
      for (let j = i; j < end; j++) {
        const o = ((j % h) * w + Math.floor(j / h)) * 4;
        data[o] = color[0]; data[o + 1] = color[1]; data[o + 2] = color[2]; data[o + 3] = 140;
      }
    }
    i = end;
  }
  return area;
}

function redraw() {
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  const masks = S.masks[S.frame] || {};
  const image = ctx.createImageData(overlay.width, overlay.height);
  for (const obj of S.objects) {
    obj.area = masks[obj.id] ? paintRle(image.data, masks[obj.id], obj.color) : 0;
  }
  ctx.putImageData(image, 0, 0);
  const r = Math.max(4, Math.round(Math.max(S.width, S.height) / 150));
  for (const obj of S.objects) {
    const prompt = obj.prompts[S.frame];
    if (!prompt) continue;
    if (prompt.box) {
      const [x0, y0, x1, y1] = prompt.box;
      ctx.strokeStyle = `rgb(${obj.color})`;
      ctx.lineWidth = Math.max(2, r / 2);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
    prompt.points.forEach(([x, y], k) => {
      ctx.beginPath();
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fillStyle = prompt.labels[k] ? "#00e600" : "#e60000";
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    });
  }
  renderObjects();
  overlay.dataset.version = String(Number(overlay.dataset.version || 0) + 1);
}

// ------------------------------------------------------------------ objects
function addObject() {
  const id = S.nextObj++;
  const obj = { id, color: PALETTE[(id - 1) % PALETTE.length], prompts: {}, area: 0 };
  S.objects.push(obj);
  S.selected = id;
  renderObjects();
  setBusy(S.busy);
  return obj;
}

function selected() {
  return S.objects.find((o) => o.id === S.selected) || addObject();
}

function renderObjects() {
  const list = $("objects");
  list.replaceChildren();
  for (const obj of S.objects) {
    const li = document.createElement("li");
    li.dataset.objId = obj.id;
    li.dataset.area = obj.area;
    li.className = obj.id === S.selected ? "selected" : "";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${obj.color})`;
    const name = document.createElement("span");
    name.textContent = `Object ${obj.id}`;
    const area = document.createElement("span");
    area.className = "area";
    area.textContent = obj.area ? `${obj.area} px` : "";
    const remove = document.createElement("button");
    remove.textContent = "×";
    remove.title = "delete this object";
    remove.onclick = (e) => { e.stopPropagation(); deleteObject(obj); };
    li.append(swatch, name, area, remove);
    li.onclick = () => { S.selected = obj.id; renderObjects(); setBusy(S.busy); };
    list.append(li);
  }
}

function deleteObject(obj) {
  run(`Deleting object ${obj.id}…`, async () => {
    const known = S.kind === "video" && Object.keys(obj.prompts).length;
    if (known) await api("DELETE", `/api/videos/${S.id}/objects/${obj.id}`);
    S.objects = S.objects.filter((o) => o !== obj);
    for (const frame of Object.values(S.masks)) delete frame[obj.id];
    if (S.selected === obj.id) S.selected = S.objects.length ? S.objects[S.objects.length - 1].id : null;
    redraw();
    status(`Deleted object ${obj.id}.`);
  });
}

// ------------------------------------------------------------------ prompts
async function sendPrompt(obj, t0) {
  const prompt = obj.prompts[S.frame];
  const body = { points: prompt.points, labels: prompt.labels };
  if (prompt.box) body.box = prompt.box;
  if (S.kind === "image") {
    const answer = await (await api("POST", `/api/images/${S.id}/segment`, Object.assign(body, { multimask: true }))).json();
    const best = answer.scores.indexOf(Math.max(...answer.scores));
    S.masks[0] = Object.assign(S.masks[0] || {}, { [obj.id]: answer.masks[best] });
    obj.score = answer.scores[best];
  } else {
    body.frame_idx = S.frame;
    body.obj_id = obj.id;
    const answer = await (await api("POST", `/api/videos/${S.id}/prompts`, body)).json();
    const masks = S.masks[answer.frame_idx] = {};
    answer.obj_ids.forEach((id, k) => { masks[id] = answer.masks[k]; });
  }
  redraw();
  requestAnimationFrame(() => S.timings.push(performance.now() - t0));
  status(`Object ${obj.id}: ${obj.area} pixels. ${S.kind === "video" ? "Add more prompts or press Track." : ""}`);
}

function prompt(change) {
  if (!S.id || S.busy) return;
  const t0 = performance.now();
  const obj = selected();
  const p = obj.prompts[S.frame] || (obj.prompts[S.frame] = { points: [], labels: [], box: null });
  change(p);
  run("Segmenting…", () => sendPrompt(obj, t0));
}

function imageXY(event) {
  const rect = overlay.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (S.width / rect.width);
  const y = (event.clientY - rect.top) * (S.height / rect.height);
  return [Math.min(Math.max(x, 0), S.width), Math.min(Math.max(y, 0), S.height)];
}

let drag = null;
overlay.addEventListener("mousedown", (e) => { if (e.button === 0) drag = { start: imageXY(e), x: e.clientX, y: e.clientY }; });
overlay.addEventListener("mousemove", (e) => {
  if (!drag || Math.hypot(e.clientX - drag.x, e.clientY - drag.y) < 6) return;
  redraw();
  const [x0, y0] = drag.start, [x1, y1] = imageXY(e);
  const ctx = overlay.getContext("2d");
  ctx.setLineDash([6, 4]);
  ctx.strokeStyle = "#ffff00";
  ctx.lineWidth = 2;
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.setLineDash([]);
});
overlay.addEventListener("mouseup", (e) => {
  if (!drag || e.button !== 0) return;
  const moved = Math.hypot(e.clientX - drag.x, e.clientY - drag.y) >= 6;
  const [x0, y0] = drag.start, [x1, y1] = imageXY(e);
  drag = null;
  if (moved && Math.abs(x1 - x0) > 1 && Math.abs(y1 - y0) > 1) {
    prompt((p) => { p.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)]; });
  } else {
    prompt((p) => { p.points.push([x1, y1]); p.labels.push(1); });
  }
});
overlay.addEventListener("contextmenu", (e) => {
  e.preventDefault();
  const xy = imageXY(e);
  prompt((p) => { p.points.push(xy); p.labels.push(0); });
});

$("add-object").onclick = () => addObject();
$("clear-object").onclick = () => {
  const obj = S.objects.find((o) => o.id === S.selected);
  if (!obj) return;
  delete obj.prompts[S.frame];
  if (S.masks[S.frame]) delete S.masks[S.frame][obj.id];
  redraw();
};

// ------------------------------------------------------------------ open a file
function reset(kind, info) {
  S.kind = kind;
  S.id = kind === "image" ? info.image_id : info.video_id;
  S.width = info.width; S.height = info.height;
  S.numFrames = info.num_frames || 1; S.fps = info.fps || 24; S.frame = 0;
  S.objects = []; S.selected = null; S.nextObj = 1; S.masks = {}; S.tracked = false;
  for (const c of [view, overlay]) { c.width = S.width; c.height = S.height; }
  fit();
  $("video-controls").hidden = kind !== "video";
  $("image-controls").hidden = kind !== "image";
  $("frame").max = S.numFrames - 1;
  $("frame").value = 0;
  $("frame-label").textContent = "0";
  addObject();
}

function fit() {  // show the image as large as the window allows (small images scaled up)
  if (!S.width) return;
  const stage = $("stage").getBoundingClientRect();
  const scale = Math.min(stage.width / S.width, (window.innerHeight - stage.top - 40) / S.height);
  for (const c of [view, overlay]) {
    c.style.width = `${Math.floor(S.width * scale)}px`;
    c.style.height = `${Math.floor(S.height * scale)}px`;
  }
}
window.addEventListener("resize", fit);

async function showFrame(index) {
  const response = await api("GET", `/api/videos/${S.id}/frames/${index}`);
  const bitmap = await createImageBitmap(await response.blob());
  if (index !== S.frame) return;  // the slider moved on meanwhile
  view.getContext("2d").drawImage(bitmap, 0, 0);
  redraw();
}

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (!file) return;
  const isImage = file.type.startsWith("image/");
  const previous = S.kind ? `/api/${S.kind}s/${S.id}` : null;
  run(`Uploading ${file.name}…`, async () => {
    if (previous) fetch(previous, { method: "DELETE", headers: headers() }).catch(() => {});
    const info = await upload(isImage ? "/api/images" : "/api/videos", file, () => {
      progress(null);
      status(isImage ? "Computing the image embedding…" : "Reading the video and embedding frame 0…");
    });
    reset(isImage ? "image" : "video", info);
    if (isImage) {
      view.getContext("2d").drawImage(await createImageBitmap(file), 0, 0);
      redraw();
    } else {
      await showFrame(0);
    }
    status(`${file.name}: ${S.width}x${S.height}${isImage ? "" : `, ${S.numFrames} frames`}. Click on an object.`);
  });
  $("file").value = "";
});

$("frame").addEventListener("input", () => {
  S.frame = Number($("frame").value);
  $("frame-label").textContent = String(S.frame);
  showFrame(S.frame).catch((e) => status(e.message, true));
});

// ------------------------------------------------------------------ track
$("track").onclick = () => run("Tracking…", async () => {
  progress(0);
  const response = await api("POST", `/api/videos/${S.id}/propagate`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", failed = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const message = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = (message.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((message.match(/^data: (.*)$/m) || [])[1] || "{}");
      if (event === "frame") {
        const masks = S.masks[data.frame_idx] = {};
        data.obj_ids.forEach((id, k) => { masks[id] = data.masks[k]; });
        progress(data.done / data.total);
        status(`Tracking… frame ${data.frame_idx} (${data.done} of ${data.total})`);
        if (data.frame_idx === S.frame) redraw();
      } else if (event === "error") {
        failed = data.detail;
      } else if (event === "done") {
        S.tracked = true;
        status(`Tracked ${data.frames} frames in ${data.seconds.toFixed(1)} s. Move the slider, or download.`);
      }
    }
  }
  if (failed) throw new Error(`tracking failed: ${failed}`);
  redraw();
});

// ------------------------------------------------------------------ downloads
function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

for (const button of document.querySelectorAll(".export")) {
  button.onclick = () => run(`Preparing the ${button.dataset.format} export…`, async () => {
    const format = button.dataset.format;
    const response = await api("GET", `/api/videos/${S.id}/export?format=${format}`);
    const name = { mp4: "overlay.mp4", rle: "annotations.json", "png-zip": "masks.zip" }[format];
    save(await response.blob(), `sam2-fast_${S.id}_${name}`);
    status(`Downloaded ${name}.`);
  });
}

$("download-png").onclick = () => {
  const canvas = document.createElement("canvas");
  canvas.width = S.width; canvas.height = S.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(view, 0, 0);
  ctx.drawImage(overlay, 0, 0);
  canvas.toBlob((blob) => save(blob, `sam2-fast_${S.id}_overlay.png`));
};

$("download-json").onclick = () => {
  const masks = S.masks[0] || {};
  const objects = S.objects.filter((o) => masks[o.id]).map((o) => ({
    obj_id: o.id, segmentation: masks[o.id], area: o.area, score: o.score, prompt: o.prompts[0],
  }));
  const doc = { image_id: S.id, width: S.width, height: S.height, objects };
  save(new Blob([JSON.stringify(doc)], { type: "application/json" }), `sam2-fast_${S.id}_masks.json`);
};

// ------------------------------------------------------------------ start
$("token").addEventListener("change", () => sessionStorage.setItem("sam2-token", $("token").value));
fetch("/healthz").then((r) => r.json()).then((h) => {
  $("token-box").hidden = !h.auth;
  $("model").textContent = `${h.model} on ${h.device}, ${h.image_size}px${h.random_weights ? " — RANDOM WEIGHTS (meaningless masks)" : ""}`;
  if (h.random_weights) $("model").className = "random";
  setBusy(false);
}).catch(() => status("the server does not answer /healthz", true));
