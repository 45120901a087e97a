// polypseg demo page. NOT FOR CLINICAL USE.
// Uploads the image once to /predict?format=prob, keeps the 8-bit probability map, and redraws
// the mask overlay and the "polyp detected" answer in the browser whenever the threshold slider
// moves (no new upload).
"use strict";

const $ = (id) => document.getElementById(id);
const ACCEPTED = ["image/jpeg", "image/png"];
const OVERLAY_RGBA = [255, 32, 96, 130]; // translucent magenta: visible on pink mucosa

let prob = null; // Uint8Array, one 0-255 probability per pixel, row-major
let width = 0;
let height = 0;
let minArea = 0; // the model's min_area_fraction (chosen on validation): the image-level rule
let minComponentRatio = 0; // the model's component filter (chosen on validation), as the server applies it
let componentBlock = 1; // side in px of the tiles the filter labels, for this image (from the server)

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function showVersion() {
  try {
    const resp = await fetch("/version", { headers: { Accept: "application/json" } });
    const info = await resp.json();
    $("model-version").textContent = info.model_version;
  } catch (err) {
    $("model-version").textContent = "unavailable";
  }
}

// The probability PNG (gray, 0-255) -> Uint8Array of the red channel.
async function decodeProbability(base64, w, h) {
  const img = new Image();
  img.src = "data:image/png;base64," + base64;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const out = new Uint8Array(w * h);
  for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
  return out;
}

// lib/decision.py binary_mask in the browser: mark the componentBlock x componentBlock tiles (from the
// top-left corner) holding a mask pixel, label the 8-connected groups of marked tiles, size each group
// by its mask pixels, and drop the groups smaller than minComponentRatio x the largest (0 keeps all).
// Returns the kept mask as 0/1 bytes.
function filterComponents(mask) {
  if (minComponentRatio <= 0) return mask;
  const block = componentBlock;
  const gw = Math.ceil(width / block);
  const gh = Math.ceil(height / block);
  const counts = new Int32Array(gw * gh); // mask pixels per tile
  for (let y = 0; y < height; y++) {
    const row = Math.floor(y / block) * gw;
    for (let x = 0; x < width; x++) if (mask[y * width + x]) counts[row + Math.floor(x / block)]++;
  }
  const labels = new Int32Array(counts.length); // 0 = empty tile or not yet labelled
  const areas = [0];
  const stack = new Int32Array(counts.length);
  for (let start = 0; start < counts.length; start++) {
    if (!counts[start] || labels[start]) continue;
    const label = areas.length;
    let top = 0;
    let area = 0;
    stack[top++] = start;
    labels[start] = label;
    while (top > 0) {
      const i = stack[--top];
      area += counts[i];
      const x = i % gw;
      const y = (i - x) / gw;
      for (let dy = -1; dy <= 1; dy++) {
        const ny = y + dy;
        if (ny < 0 || ny >= gh) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          if (nx < 0 || nx >= gw) continue;
          const j = ny * gw + nx;
          if (counts[j] && !labels[j]) {
            labels[j] = label;
            stack[top++] = j;
          }
        }
      }
    }
    areas.push(area);
  }
  if (areas.length <= 2) return mask; // at most one region: nothing to drop
  const keepFrom = minComponentRatio * Math.max(...areas);
  const out = new Uint8Array(mask.length);
  for (let y = 0; y < height; y++) {
    const row = Math.floor(y / block) * gw;
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (mask[i] && areas[labels[row + Math.floor(x / block)]] >= keepFrom) out[i] = 1;
    }
  }
  return out;
}

// Mask = probability >= threshold less the small regions, the server's rule, at 8-bit precision; so
// is "polyp detected" (lib/decision.py: some mask pixel and a mask share >= min_area_fraction).
function render() {
  if (!prob) return;
  const threshold = parseFloat($("threshold").value);
  $("threshold-value").textContent = threshold.toFixed(2);
  const cut = Math.round(threshold * 255);
  const mask = new Uint8Array(prob.length);
  for (let i = 0; i < prob.length; i++) mask[i] = prob[i] >= cut ? 1 : 0;
  const kept = filterComponents(mask);
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  const px = image.data;
  let count = 0;
  for (let i = 0; i < kept.length; i++) {
    if (kept[i]) {
      px.set(OVERLAY_RGBA, 4 * i);
      count++;
    }
  }
  ctx.putImageData(image, 0, 0);
  canvas.dataset.maskPixels = String(count);
  $("fraction").textContent = ((100 * count) / prob.length).toFixed(1) + " %";
  $("detected").textContent = count > 0 && count / prob.length >= minArea ? "yes" : "no";
}

async function predict(file) {
  if (!file) return;
  if (!ACCEPTED.includes(file.type)) {
    setStatus(`Only JPEG or PNG images can be segmented (got ${file.type || "unknown type"}).`, true);
    return;
  }
  setStatus("Segmenting...");
  $("threshold").disabled = true;
  const started = performance.now();
  let body;
  let resp;
  try {
    resp = await fetch("/predict?format=prob", {
      method: "POST",
      headers: { "Content-Type": file.type, Accept: "application/json" },
      body: file,
    });
    body = await resp.json();
  } catch (err) {
    setStatus("The server did not answer: " + err, true);
    return;
  }
  if (!resp.ok) {
    setStatus(`${body.title}: ${body.description}`, true);
    return;
  }
  const roundTrip = performance.now() - started;
  width = body.width;
  height = body.height;
  minArea = body.min_area_fraction;
  minComponentRatio = body.min_component_ratio || 0; // absent from servers older than the filter
  componentBlock = body.component_block || 1; // absent from servers that labelled single pixels
  prob = await decodeProbability(body.mask, width, height);

  const image = $("image");
  if (image.src) URL.revokeObjectURL(image.src);
  image.src = URL.createObjectURL(file);
  await image.decode();
  const overlay = $("overlay");
  overlay.width = width;
  overlay.height = height;
  $("stage").hidden = false;

  $("threshold").value = body.threshold;
  $("threshold").disabled = false;
  $("model-version").textContent = body.model_version;
  $("latency").textContent = `${body.latency_ms.toFixed(1)} ms server, ${roundTrip.toFixed(0)} ms round trip`;
  $("request-id").textContent = body.request_id;
  render();
  overlay.dataset.ready = "1";
  setStatus(`${file.name}: ${width} x ${height} px. Move the threshold to redraw the mask.`);
}

function wireUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => predict(e.target.files[0]));
  $("threshold").addEventListener("input", render);
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    predict(e.dataTransfer.files[0]);
  });
  showVersion();
}

wireUp();
