// Decodes latent codes to images in the browser, so an image follows the hand while a slider is dragged.
//
// A Streamlit components-v2 module (dashboard/explore/browser_decoder.py mounts it). Python sends a small fully connected
// network once per weights version: layers of (in, out) float32 matrices stored input-major (W^T, base64), biases,
// ReLU between layers and an output nonlinearity ("sigmoid": Bernoulli means, the RBM's p(v|h); "tanh_half": the
// seed's Gaussian decoder, tanh + 0.5 clamped to [0, 1]). Each input event runs the forward pass in float64 on the
// float32 weights (the same numbers genlib multiplies, summed more exactly), and the next animation frame paints
// the result into a 28x28 canvas upscaled without smoothing.
//
// When a slider is let go, the component sends all inputs once, numbered (trigger "release": {values, seq}): the
// page's state for shared links. Each run sends back `ack`, the last release number it has taken.
//
// window.__genlibDecoders[uid] is a live handle for tests and measurements: `last` (the decoded means, Float64Array),
// `values` (the inputs), `frames` (images painted so far), `decodeMs` / `decodeMsTotal` (time in the forward pass),
// `sliders` (the range inputs), `seq` / `ack` (releases sent / taken by the latest run), `decode(values)`.

const WEIGHTS = (window.__genlibWeights = window.__genlibWeights || new Map()); // version -> parsed network
const HANDLES = (window.__genlibDecoders = window.__genlibDecoders || {});
const INSTANCES = new WeakMap(); // parentElement -> per-instance state (the default export runs on every data change)
const KEEP_VERSIONS = 4; // weights of older versions are dropped (a training run sends a new version every snapshot)

function floats(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer); // little-endian float32, as Python packed them
}

function parseNet(w) {
  return {
    out: w.out,
    layers: w.layers.map((l) => ({
      n_in: l.n_in, n_out: l.n_out, relu: l.act === "relu", wt: floats(l.wt), b: floats(l.b),
    })),
  };
}

function remember(version, net) {
  WEIGHTS.delete(version);
  WEIGHTS.set(version, net);
  while (WEIGHTS.size > KEEP_VERSIONS) WEIGHTS.delete(WEIGHTS.keys().next().value);
}

// y = act(W x + b) layer by layer; W^T is input-major, so each nonzero input adds one contiguous row
// (inputs that a ReLU zeroed cost nothing)
export function forward(net, input) {
  let x = input;
  for (const l of net.layers) {
    const y = new Float64Array(l.n_out);
    for (let r = 0; r < l.n_out; r++) y[r] = l.b[r];
    for (let c = 0; c < l.n_in; c++) {
      const a = x[c];
      if (a === 0) continue;
      const row = l.wt.subarray(c * l.n_out, (c + 1) * l.n_out);
      for (let r = 0; r < l.n_out; r++) y[r] += a * row[r];
    }
    if (l.relu) for (let r = 0; r < l.n_out; r++) if (y[r] < 0) y[r] = 0;
    x = y;
  }
  const p = new Float64Array(x.length);
  if (net.out === "sigmoid") {
    for (let i = 0; i < x.length; i++) p[i] = 1 / (1 + Math.exp(-x[i]));
  } else {
    for (let i = 0; i < x.length; i++) p[i] = Math.min(1, Math.max(0, Math.tanh(x[i]) + 0.5));
  }
  return p;
}

function build(root, data) {
  const wrap = document.createElement("div");
  wrap.className = "genlib-decoder";
  const controls = document.createElement("div");
  controls.className = "controls";
  const canvas = document.createElement("canvas");
  canvas.width = data.shape[1];
  canvas.height = data.shape[0];
  canvas.style.width = `${data.px}px`;
  canvas.style.height = `${Math.round((data.px * data.shape[0]) / data.shape[1])}px`;
  canvas.setAttribute("data-testid", "genlib-decoder-canvas");
  const sliders = [];
  for (const s of data.sliders) {
    const row = document.createElement("label");
    row.className = "row";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = s.label;
    const input = document.createElement("input");
    input.type = "range";
    input.min = String(s.min);
    input.max = String(s.max);
    input.step = String(s.step);
    input.value = String(s.value);
    input.dataset.index = String(s.index);
    const shown = document.createElement("span");
    shown.className = "value";
    row.append(name, input, shown);
    controls.append(row);
    sliders.push({ input, shown, index: s.index });
  }
  wrap.append(controls, canvas);
  root.append(wrap);
  return { wrap, canvas, ctx: canvas.getContext("2d"), sliders };
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  if (!data || !data.uid) return;
  if (data.weights) remember(data.version, parseNet(data.weights));
  const sliderLayout = data.sliders.map((s) => [s.index, s.label, s.min, s.max, s.step]);
  const layout = JSON.stringify([data.uid, data.shape, data.px, sliderLayout]);
  let st = INSTANCES.get(parentElement);
  if (!st || st.layout !== layout) {
    if (st) st.dom.wrap.remove();
    st = {
      layout, dom: build(parentElement, data), values: Float64Array.from(data.base), frames: 0, pending: false,
      asked: new Set(), seq: data.ack || 0, // releases sent: the server's runs say up to which one they took
    };
    for (const s of data.sliders) st.values[s.index] = s.value;
    INSTANCES.set(parentElement, st);
  } else if (st.session !== data.session) {
    st.seq = data.ack || 0; // another server session (a restart under this page): its numbers start again
  }
  st.session = data.session;
  // A run made before the server took this page's latest release (keys pressed faster than it reruns) carries
  // positions the hand has left: moving the sliders there would lose the presses since. Its reset waits, unseen,
  // until a run that has taken the release comes.
  const current = (data.ack || 0) >= st.seq;
  if (current && data.reset !== st.reset) {
    st.values = Float64Array.from(data.base); // Python moved the base point (another test digit, "All to 0", ...)
    for (const s of st.dom.sliders) s.input.value = String(data.sliders.find((d) => d.index === s.index).value);
    for (const s of data.sliders) st.values[s.index] = s.value;
  }
  if (current) st.reset = data.reset;
  st.version = data.version;
  st.out = data.out;

  const paint = () => {
    st.pending = false;
    const net = WEIGHTS.get(st.version);
    if (!net) return;
    const t0 = performance.now();
    const p = forward(net, st.values);
    handle.decodeMs = performance.now() - t0;
    handle.decodeMsTotal = (handle.decodeMsTotal || 0) + handle.decodeMs;
    const img = st.dom.ctx.createImageData(st.dom.canvas.width, st.dom.canvas.height);
    for (let i = 0; i < p.length; i++) {
      const g = Math.round(p[i] * 255);
      img.data[4 * i] = g;
      img.data[4 * i + 1] = g;
      img.data[4 * i + 2] = g;
      img.data[4 * i + 3] = 255;
    }
    st.dom.ctx.putImageData(img, 0, 0);
    st.frames += 1;
    st.dom.canvas.dataset.frames = String(st.frames);
    handle.last = p;
    handle.frames = st.frames;
  };
  const schedule = () => {
    if (!st.pending) {
      st.pending = true;
      requestAnimationFrame(paint);
    }
  };
  for (const s of st.dom.sliders) {
    s.shown.textContent = Number(s.input.value).toFixed(2);
    s.input.oninput = () => {
      st.values[s.index] = Number(s.input.value);
      s.shown.textContent = Number(s.input.value).toFixed(2);
      schedule();
    };
    // on release only (never while dragging): tell Python where the sliders stopped, so a shared link keeps them
    s.input.onchange = () => {
      st.seq += 1;
      handle.seq = st.seq;
      setTriggerValue("release", { values: Array.from(st.values), seq: st.seq });
    };
  }
  const handle = (HANDLES[data.uid] = HANDLES[data.uid] || {});
  Object.assign(handle, {
    values: st.values,
    sliders: st.dom.sliders.map((s) => s.input),
    version: st.version,
    ready: WEIGHTS.has(st.version),
    frames: st.frames,
    seq: st.seq, // releases sent, and the last one the server had taken when it made this run
    ack: data.ack || 0,
    decode: (values) => forward(WEIGHTS.get(st.version), Float64Array.from(values)),
  });
  if (!WEIGHTS.has(st.version)) {
    // this page has no weights of this version (Python sends them once per session): ask for them, once
    if (!st.asked.has(st.version)) {
      st.asked.add(st.version);
      setTriggerValue("need", st.version);
    }
    return;
  }
  schedule();
}
