// The GAN's latent-point sliders (the course seed's scale_means and scale_stds) with their grid fetched straight from
// the server's grid route, one HTTP request per move, no Streamlit rerun (dashboard/grid_route.py serves it).
//
// A Streamlit components-v2 module (dashboard/explore/gan_sliders.py mounts it). Python sends the route's URL for the
// weights shown (an unguessable ticket), the grid size, the noise seed and the sliders' positions. Each input event
// asks for the grid at the new positions (an older request still on its way is cancelled: the hand has moved on);
// the answer is painted when it arrives. An error answer (too much work asked, weights no longer shown) is shown as
// its sentence under the grid. When a slider is let go, the component sends both positions once (trigger "release"):
// the page's state, for shared links.
//
// window.__genlibGanGrids[uid] is a live handle for tests and measurements: `loads` (grids painted), `lastMs` (input
// event to grid painted, ms), `url` (the last grid's address), `error` (the last error's sentence or null), `sliders`.

const HANDLES = (window.__genlibGanGrids = window.__genlibGanGrids || {});
const mark = (p) => `${Number(p.means).toFixed(2)},${Number(p.stds).toFixed(2)}`; // one slider position, as text
const INSTANCES = new WeakMap(); // parentElement -> per-instance state (the default export runs on every data change)

function build(root, data) {
  const wrap = document.createElement("div");
  wrap.className = "genlib-gan-grid";
  const controls = document.createElement("div");
  controls.className = "controls";
  const sliders = {};
  for (const s of data.sliders) {
    const row = document.createElement("label");
    row.className = "row";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = s.label;
    name.title = s.help;
    const input = document.createElement("input");
    input.type = "range";
    input.min = String(s.min);
    input.max = String(s.max);
    input.step = String(s.step);
    input.value = String(s.value);
    input.setAttribute("aria-label", s.label);
    input.dataset.name = s.name;
    const shown = document.createElement("span");
    shown.className = "value";
    shown.textContent = Number(s.value).toFixed(1);
    row.append(name, input, shown);
    controls.append(row);
    sliders[s.name] = { input, shown };
  }
  const figure = document.createElement("div");
  figure.className = "figure";
  const img = document.createElement("img");
  img.alt = "generated digits at the sliders' latent points";
  img.setAttribute("data-testid", "genlib-gan-grid-image");
  const note = document.createElement("div");
  note.className = "note";
  figure.append(img, note);
  wrap.append(controls, figure);
  root.append(wrap);
  return { wrap, img, note, sliders };
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  if (!data || !data.uid) return;
  const layout = JSON.stringify([data.uid, data.sliders.map((s) => [s.name, s.min, s.max, s.step])]);
  let st = INSTANCES.get(parentElement);
  if (!st || st.layout !== layout) {
    if (st) st.dom.wrap.remove();
    st = { layout, dom: build(parentElement, data), controller: null, last: null, shown: null, asked: null,
      sent: new Set() };
    INSTANCES.set(parentElement, st);
  } else if (data.reset !== st.reset && !st.sent.has(mark(JSON.parse(data.reset)))) {
    // Python moved the sliders (not to a position this page sent: a rerun answering an older release must not pull
    // the thumb back from where the hand has gone since)
    for (const s of data.sliders) st.dom.sliders[s.name].input.value = String(s.value);
  }
  st.reset = data.reset;
  st.base = data.url;
  st.n = data.n;
  st.seed = data.seed;
  st.setTrigger = setTriggerValue; // the listeners below were bound on the first render: they read these
  const handle = (HANDLES[data.uid] = HANDLES[data.uid] || { loads: 0, lastMs: null, url: null, error: null });
  handle.sliders = st.dom.sliders;

  const positions = () => ({
    means: Number(st.dom.sliders.means.input.value),
    stds: Number(st.dom.sliders.stds.input.value),
  });
  // the picture's address names the weights (ticket), the grid size, the positions and the seed; the request adds
  // where the sliders were before, so the server makes the next grids ahead in the direction the hand moves
  const pictureOf = (p) => `${st.base}?${new URLSearchParams({ n: String(st.n), means: p.means.toFixed(2),
    stds: p.stds.toFixed(2), seed: String(st.seed) })}`;
  const show = (t0) => {
    const p = positions();
    for (const [name, s] of Object.entries(st.dom.sliders)) s.shown.textContent = p[name].toFixed(1);
    const picture = pictureOf(p);
    const before = st.last;
    st.last = p;
    if (picture === st.asked) return; // on its way
    if (st.controller) st.controller.abort(); // the hand moved on: the grid asked for before is not wanted
    st.asked = null;
    if (picture === st.shown) return; // back where the screen already is
    const url = before ? `${picture}&last_means=${before.means.toFixed(2)}&last_stds=${before.stds.toFixed(2)}`
      : picture;
    st.asked = picture;
    const controller = (st.controller = new AbortController());
    fetch(url, { signal: controller.signal, credentials: "same-origin" })
      .then((r) => (r.ok ? r.blob() : r.text().then((text) => Promise.reject(new Error(text)))))
      .then((blob) => {
        const src = URL.createObjectURL(blob);
        st.dom.img.onload = () => {
          URL.revokeObjectURL(src);
          st.shown = picture;
          handle.loads += 1;
          handle.lastMs = performance.now() - t0;
          handle.url = url;
          handle.error = null;
          st.dom.note.textContent = "";
          st.dom.img.dataset.loads = String(handle.loads);
        };
        st.dom.img.src = src;
      })
      .catch((e) => {
        if (e.name === "AbortError") return;
        if (st.asked === picture) st.asked = null; // a later move may ask again
        handle.error = e.message;
        st.dom.note.textContent = e.message;
      });
  };
  for (const s of Object.values(st.dom.sliders)) {
    if (s.input.dataset.bound) continue;
    s.input.dataset.bound = "1";
    s.input.addEventListener("input", () => show(performance.now()));
    s.input.addEventListener("change", () => {
      const p = positions();
      st.sent.add(mark(p));
      if (st.sent.size > 64) st.sent.delete(st.sent.values().next().value);
      st.setTrigger("release", [p.means, p.stds]);
    });
  }
  show(performance.now()); // first paint, and after Python changed the weights, the grid size or the seed
}
