// nested-diffusion studio: a page over the public /v1 API only (no build step, no CDN).
// State lives in this page: the session id (also in the address, #s=ID, so a reload resumes it),
// the last event id seen, and one view per branch. Events come from a fetch()-read SSE stream
// (so that a token can travel as a header), resumed with Last-Event-ID after any interruption.
"use strict";

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const TERMINAL = new Set(["stopped", "done", "expired", "error"]);
  const EDIT_FIELDS = new Set(["mask_image", "strength"]);
  const state = {
    token: null, health: null, session: null, checkpoints: [], lastEventId: 0,
    views: new Map(), streaming: false, abort: null, starting: false, firstFramePainted: false,
    edit: null,  // the session's edit (input, mask, strength and their URLs), or null for a generation
  };

  // -- the API --------------------------------------------------------------------------------------
  function headers(extra = {}) {
    return state.token ? { ...extra, Authorization: `Bearer ${state.token}` } : extra;
  }

  async function api(method, path, body) {
    const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    return answer(await fetch(path, init));
  }

  // An image file (an input or a painted mask) for edits: the server checks it and names it by its pixels.
  async function uploadImage(blob, type) {
    return answer(await fetch("/v1/images", {
      method: "POST", headers: headers({ "Content-Type": type || "application/octet-stream" }), body: blob,
    }));
  }

  async function answer(response) {
    if (response.status === 204) return null;
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      error.retryAfter = Number(response.headers.get("Retry-After")) || null;
      throw error;
    }
    return data;
  }

  // With a token, images need the header too: fetch them as blobs (CSP allows img-src blob:).
  const blobs = new Map();
  async function imageUrl(url) {
    if (!state.token) return url;
    if (!blobs.has(url)) {
      blobs.set(url, fetch(url, { headers: headers() }).then((r) => {
        if (!r.ok) throw new Error(`${r.status}`);
        return r.blob();
      }).then((b) => URL.createObjectURL(b)));
    }
    return blobs.get(url);
  }

  function setImage(img, url) {
    img.dataset.url = url;
    imageUrl(url).then((src) => { if (img.dataset.url === url) img.src = src; }, () => {});
  }

  async function download(url, name) {
    const response = await fetch(url, { headers: headers() });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await response.blob());
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
  }

  function say(text, isError = false) {
    const message = $("#message");
    message.textContent = text;
    message.classList.toggle("error", isError);
  }

  const seconds = (s) => (s == null ? "" : s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`);

  // -- the controls ---------------------------------------------------------------------------------
  function showServer(health) {
    $("#server").textContent = `${health.model} · ${health.family} · ${health.device} · ` +
      `${health.sessions}/${health.max_sessions} sessions`;
  }

  const refreshServer = () => api("GET", "/v1/health").then(showServer, () => {});

  function setupControls(health) {
    const names = health.class_names || [];
    showServer(health);
    $("#guidance").placeholder = `model default (${health.default_guidance})`;
    $("#budget").max = health.limits.max_nfe;
    $("#num-images").max = health.limits.max_images;
    const samplers = $("#inner-sampler");  // the server's registry, never a copy
    for (const name of health.samplers || []) samplers.add(new Option(name, name));
    if (health.conditioning === "class") {
      const select = $("#class");
      select.replaceChildren();
      for (let i = 0; i < health.num_classes; i++) select.add(new Option(names[i] ?? String(i), String(i)));
      select.add(new Option("every class, in turn", "*"));
      select.add(new Option("unconditional", ""));
      $("#class-row").hidden = false;
    } else if (health.conditioning === "text") {
      $("#prompt-row").hidden = false;
      $("#negative-row").hidden = false;
    }
  }

  const number = (id, parse = Number) => {
    const value = $(id).value.trim();
    return value === "" ? null : parse(value);
  };

  function conditionFromControls(numImages) {
    const condition = { guidance_scale: number("#guidance") };
    if (state.health.conditioning === "class") {
      const value = $("#class").value;
      condition.class_labels = value === "" ? null
        : value === "*" ? Array.from({ length: numImages }, (_, i) => i % state.health.num_classes)
          : [Number(value)];
    } else if (state.health.conditioning === "text") {
      condition.prompt = $("#prompt").value.trim() || null;
      condition.negative_prompt = $("#negative-prompt").value.trim() || null;
    }
    return condition;
  }

  function requestFromControls() {
    const numImages = number("#num-images", (v) => parseInt(v, 10)) ?? 1;
    const inner = $("#inner-steps").value.trim();
    const innerSteps = inner === "" ? null
      : inner.includes(",") ? inner.split(",").map((v) => parseInt(v, 10)) : parseInt(inner, 10);
    return {  // a fixed layout (inner steps) replaces the budget; a list of counts sets the outer steps too
      ...conditionFromControls(numImages),
      num_images: numImages,
      budget: innerSteps === null ? number("#budget", (v) => parseInt(v, 10)) : null,
      deadline: number("#deadline"),
      seed: number("#seed", (v) => parseInt(v, 10)) ?? 0,
      outer_steps: Array.isArray(innerSteps) ? null : number("#outer-steps", (v) => parseInt(v, 10)),
      inner_steps: innerSteps,
      inner_sampler: $("#inner-sampler").value || null,
      compare_vanilla: $("#compare").checked,
    };
  }

  // -- editing: an uploaded input, a mask painted on a canvas, a strength ----------------------------
  // The canvases hold the edit's own pixels (its size: the upload fitted to the model's default area);
  // the brush paints whole pixels, so the mask sent is exactly what was painted (white = repaint).
  const editor = { upload: null, size: null, erase: false, down: false, last: null, version: 0 };

  function fitSize(width, height) {
    const [h0, w0] = state.health.default_size;
    const m = state.health.size_multiple;
    const side = Math.floor(state.health.limits.max_side / m) * m;
    const scale = Math.min(1, Math.sqrt((h0 * w0) / (width * height)));
    const round = (v) => Math.min(side, Math.max(m, Math.floor((v * scale) / m) * m));
    return [round(height), round(width)];
  }

  async function chooseImage(file) {
    if (!file) return;
    say("");
    try {
      const uploaded = await uploadImage(file, file.type);
      const bitmap = await createImageBitmap(file);
      const [h, w] = fitSize(uploaded.width, uploaded.height);
      editor.upload = uploaded;
      editor.size = [h, w];
      for (const canvas of [$("#edit-input"), $("#edit-mask")]) { canvas.width = w; canvas.height = h; }
      const g = $("#edit-input").getContext("2d");
      g.imageSmoothingQuality = "high";
      g.drawImage(bitmap, 0, 0, w, h);
      const brush = $("#brush-size");
      brush.max = Math.max(1, Math.round(Math.max(w, h) / 2));
      brush.value = Math.max(1, Math.round(Math.max(w, h) / 9));
      $("#brush-size-value").value = brush.value;
      $("#strength").value = state.health.editing.default_strength.img2img;
      editor.version += 1;
      $("#edit-area").hidden = false;
      refreshEditor();
    } catch (e) {
      say(`image: ${e.message}`, true);
      $("#edit-file").value = "";
    }
  }

  function removeImage() {
    editor.upload = null;
    editor.size = null;
    $("#edit-file").value = "";
    $("#edit-area").hidden = true;
  }

  function dab(x, y) {
    const canvas = $("#edit-mask");
    const g = canvas.getContext("2d");
    const d = Number($("#brush-size").value);
    g.globalCompositeOperation = editor.erase ? "destination-out" : "source-over";
    g.fillStyle = "#ff4b4b";
    g.fillRect(Math.round(x - d / 2), Math.round(y - d / 2), d, d);
  }

  function paint(event) {
    const canvas = $("#edit-mask");
    const rect = canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * canvas.width) / rect.width;
    const y = ((event.clientY - rect.top) * canvas.height) / rect.height;
    const from = editor.last || { x, y };
    const steps = Math.max(1, Math.ceil(Math.hypot(x - from.x, y - from.y) / Math.max(0.5, Number($("#brush-size").value) / 3)));
    for (let i = 1; i <= steps; i++) dab(from.x + ((x - from.x) * i) / steps, from.y + ((y - from.y) * i) / steps);
    editor.last = { x, y };
    editor.version += 1;
  }

  function maskPainted() {
    if (!editor.size) return false;
    const [h, w] = editor.size;
    const alpha = $("#edit-mask").getContext("2d").getImageData(0, 0, w, h).data;
    for (let i = 3; i < alpha.length; i += 4) if (alpha[i] >= 128) return true;
    return false;
  }

  function maskPng() {  // white where painted, black elsewhere, opaque
    const [h, w] = editor.size;
    const painted = $("#edit-mask").getContext("2d").getImageData(0, 0, w, h).data;
    const out = new ImageData(w, h);
    for (let i = 0; i < w * h; i++) {
      const v = painted[4 * i + 3] >= 128 ? 255 : 0;
      out.data[4 * i] = out.data[4 * i + 1] = out.data[4 * i + 2] = v;
      out.data[4 * i + 3] = 255;
    }
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").putImageData(out, 0, 0);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }

  // Nested DDRM (a mask on a pixel-space model) starts from noise: no strength, no inner sampler.
  const fixedStrength = (masked) => masked && !state.health.editing.strength_with_mask;

  function refreshEditor() {
    if (!editor.size) return;
    const masked = maskPainted();
    const strength = $("#strength");
    strength.disabled = fixedStrength(masked);
    $("#strength-value").value = strength.disabled ? "1.00" : Number(strength.value).toFixed(2);
    const [h, w] = editor.size;
    const kind = masked ? `inpainting (${state.health.editing.inpainting}${strength.disabled ? ", strength 1" : ""})`
      : "image-to-image";
    $("#edit-info").textContent = `${editor.upload.width}×${editor.upload.height} upload, edited at ${w}×${h}: ${kind}`;
  }

  async function editFields() {
    if (!editor.upload) return {};
    const [height, width] = editor.size;
    const fields = { image: editor.upload.image_id, height, width };
    const masked = maskPainted();
    if (masked) fields.mask_image = (await uploadImage(await maskPng(), "image/png")).image_id;
    fields.strength = fixedStrength(masked) ? null : Number($("#strength").value);
    if (fixedStrength(masked)) fields.inner_sampler = null;
    state.maskVersion = editor.version;
    return fields;
  }

  function setupEditor() {
    $("#edit-file").addEventListener("change", (event) => chooseImage(event.target.files[0]));
    $("#edit-remove").addEventListener("click", removeImage);
    const mask = $("#edit-mask");
    mask.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      mask.setPointerCapture(event.pointerId);
      editor.down = true;
      editor.last = null;
      paint(event);
    });
    mask.addEventListener("pointermove", (event) => { if (editor.down) paint(event); });
    for (const name of ["pointerup", "pointercancel"]) {
      mask.addEventListener(name, () => { editor.down = false; editor.last = null; refreshEditor(); });
    }
    const tool = (erase) => {
      editor.erase = erase;
      $("#brush-paint").classList.toggle("active", !erase);
      $("#brush-erase").classList.toggle("active", erase);
      $("#brush-paint").setAttribute("aria-pressed", String(!erase));
      $("#brush-erase").setAttribute("aria-pressed", String(erase));
    };
    $("#brush-paint").addEventListener("click", () => tool(false));
    $("#brush-erase").addEventListener("click", () => tool(true));
    $("#mask-clear").addEventListener("click", () => {
      const [h, w] = editor.size || [0, 0];
      $("#edit-mask").getContext("2d").clearRect(0, 0, w, h);
      editor.version += 1;
      refreshEditor();
    });
    $("#brush-size").addEventListener("input", () => { $("#brush-size-value").value = $("#brush-size").value; });
    $("#strength").addEventListener("input", refreshEditor);
  }

  // -- one view per branch --------------------------------------------------------------------------
  class BranchView {
    constructor(id) {
      this.id = id;
      this.kind = id.startsWith("v") ? "vanilla" : "nested";
      this.state = "running";
      this.frames = new Map();  // step -> frame event data
      this.pinned = null;       // a step chosen on the timeline, or null: follow the newest frame
      this.selected = 0;        // the image that Download, GIF and Vary act on
      this.el = $("#branch-template").content.firstElementChild.cloneNode(true);
      this.el.dataset.branch = id;
      this.el.classList.toggle("vanilla", this.kind === "vanilla");
      $(".name", this.el).textContent = this.kind === "vanilla" ? "vanilla x̂0 previews" : id;
      if (this.kind === "vanilla") {
        $(".lineage", this.el).textContent = state.edit ? "the vanilla edit · same seed and NFEs" : "DDIM η = 1 · same seed and NFEs";
        $(".lineage", this.el).title = "the one-step x̂0 estimate a vanilla sampler shows at the same NFEs: what other UIs preview";
        for (const name of [".apply", ".fork-group", ".pick"]) $(name, this.el).hidden = true;
      }
      $(".apply-edit", this.el).hidden = this.kind === "vanilla" || !state.edit;
      this.strength = state.edit ? state.edit.strength : null;  // the edit as this branch runs it
      this.maskVersion = state.maskVersion;
      $(".apply-edit", this.el).addEventListener("click", () => this.applyEdit());
      $(".pause", this.el).addEventListener("click", () => this.control("pause"));
      $(".resume", this.el).addEventListener("click", () => this.control("resume"));
      $(".stop", this.el).addEventListener("click", () => this.control("stop"));
      $(".apply", this.el).addEventListener("click", () => this.apply());
      $(".fork", this.el).addEventListener("click", () => this.fork(null));
      $(".prune", this.el).addEventListener("click", () => this.prune());
      $(".pick", this.el).addEventListener("click", () => pick(this.id));
      for (const link of [$(".download", this.el), $(".gif", this.el)]) {
        link.addEventListener("click", (event) => {
          if (!state.token || !link.href) return;
          event.preventDefault();
          download(link.href, link.download).catch((e) => say(`download failed: ${e.message}`, true));
        });
      }
      this.setState("running");
    }

    path(suffix = "") { return `/v1/sessions/${state.session}/branches/${this.id}${suffix}`; }

    describe(info) {
      if (info.parent) {
        const what = info.image == null ? "" : `, image ${info.image} ×${info.count ?? info.num_images}`;
        $(".lineage", this.el).textContent = `fork of ${info.parent} at step ${info.at_step}${what} · seed ${info.seed}`;
        this.parent = info.parent;
      }
      if (info.total_nfe) this.total = info.total_nfe;
      if (info.num_steps) this.numSteps = info.num_steps;
    }

    setState(word, detail = {}) {
      this.state = word;
      const status = $(".status", this.el);
      status.textContent = word;
      status.className = `status ${word}`;
      status.title = detail.error || detail.reason || "";
      const live = !TERMINAL.has(word);
      $(".pause", this.el).disabled = word !== "running";
      $(".resume", this.el).disabled = word !== "paused";
      $(".stop", this.el).disabled = !live;
      $(".apply", this.el).disabled = !live;
      $(".apply-edit", this.el).disabled = !live;
      $(".fork", this.el).disabled = word === "done" || word === "error" || word === "expired";
      this.el.classList.toggle("terminal", !live);
      if (word === "done" && this.latest()) $(".eta", this.el).textContent = `done in ${seconds(this.latest().elapsed)}`;
      if (word === "stopped") $(".eta", this.el).textContent = detail.reason === "deadline" ? "deadline reached" : "stopped";
      renderTree();
    }

    latest() {
      let best = null;
      for (const frame of this.frames.values()) if (!best || frame.step > best.step) best = frame;
      return best;
    }

    ensureImages(count) {
      const box = $(".images", this.el);
      while (box.children.length < count) {
        const i = box.children.length;
        const figure = document.createElement("figure");
        const img = document.createElement("img");
        img.dataset.testid = "frame";
        img.alt = `${this.id} image ${i}`;
        img.addEventListener("click", () => this.select(i));
        img.addEventListener("load", () => {
          if (!state.firstFramePainted) {  // decoded; the next animation frame paints it
            state.firstFramePainted = true;
            requestAnimationFrame(() => performance.mark("studio-first-frame"));
          }
        });
        figure.append(img);
        if (this.kind === "nested") {
          const vary = document.createElement("button");
          vary.type = "button";
          vary.className = "vary small";
          vary.dataset.testid = "vary";
          vary.textContent = "Vary";
          vary.title = "continue this image as variations in a new branch (Fork × count)";
          vary.addEventListener("click", () => this.fork(i));
          figure.append(vary);
        }
        box.append(figure);
      }
      box.classList.toggle("grid", count > 1);
      this.select(Math.min(this.selected, count - 1));
    }

    select(i) {
      this.selected = i;
      $(".images", this.el).querySelectorAll("figure").forEach((f, j) => f.classList.toggle("selected", j === i && f.parentElement.children.length > 1));
      this.updateLinks();
    }

    addFrame(frame) {
      const isNew = !this.frames.has(frame.step);
      this.frames.set(frame.step, frame);
      this.total = frame.total_nfe;
      this.numSteps = frame.num_steps;
      if (isNew) this.addThumb(frame);
      if (this.pinned === null && frame === this.latest()) this.show(frame);
      if (frame.eta != null && !TERMINAL.has(this.state)) $(".eta", this.el).textContent = `ETA ${seconds(frame.eta)}`;
      if (frame.step === this.numSteps && this.state === "done") this.setState("done");
      this.refreshReceipt();
    }

    addThumb(frame) {
      const list = $(".timeline", this.el);
      const item = document.createElement("li");
      item.dataset.step = frame.step;
      const button = document.createElement("button");
      button.type = "button";
      button.title = `step ${frame.step}: ${frame.nfe} NFE`;
      const thumb = document.createElement("img");
      thumb.alt = `${frame.nfe} NFE`;
      if (frame.images.length) setImage(thumb, frame.images[0]);
      const label = document.createElement("span");
      label.textContent = frame.nfe;
      button.append(thumb, label);
      button.addEventListener("click", () => this.pin(frame.step));
      item.append(button);
      const after = [...list.children].find((li) => Number(li.dataset.step) > frame.step);
      list.insertBefore(item, after || null);
      item.classList.toggle("inherited", !!frame.inherited);
    }

    pin(step) {
      this.pinned = this.pinned === step || step === this.latest().step ? null : step;
      $(".timeline", this.el).querySelectorAll("li").forEach((li) => li.classList.toggle("pinned", Number(li.dataset.step) === this.pinned));
      this.show(this.pinned === null ? this.latest() : this.frames.get(step));
    }

    show(frame) {
      this.shown = frame;
      this.ensureImages(Math.max(1, frame.images.length));
      const imgs = $(".images", this.el).querySelectorAll("img");
      frame.images.forEach((url, i) => setImage(imgs[i], url));
      this.el.dataset.step = frame.step;
      $(".step", this.el).textContent = frame.step;
      $(".steps", this.el).textContent = frame.num_steps;
      $(".nfe", this.el).textContent = frame.nfe;
      $(".total", this.el).textContent = frame.total_nfe;
      $(".elapsed", this.el).textContent = seconds(frame.elapsed);
      const progress = $(".progress", this.el);
      progress.max = frame.total_nfe;
      progress.value = frame.nfe;
      this.updateLinks();
    }

    updateLinks() {
      const frame = this.shown;
      const png = $(".download", this.el);
      const gif = $(".gif", this.el);
      if (!frame || !frame.images[this.selected]) {
        png.removeAttribute("href");
        gif.removeAttribute("href");
        return;
      }
      png.href = frame.images[this.selected];
      png.download = `${this.id}-step${frame.step}-nfe${frame.nfe}-${this.selected}.png`;
      gif.href = this.path(`/animation/${this.selected}.gif`);
      gif.download = `${this.id}-${this.selected}.gif`;
    }

    receipt(rev, fromStep, fields = []) {
      const what = fields.some((f) => EDIT_FIELDS.has(f)) ? "edit" : "condition";
      this.lastReceipt = { rev, fromStep, what };
      this.refreshReceipt();
    }

    refreshReceipt() {
      if (!this.lastReceipt) return;
      const { rev, fromStep, what } = this.lastReceipt;
      const latest = this.latest();
      const seen = latest && latest.condition_rev >= rev;
      $(".receipt", this.el).textContent = seen
        ? `${what} rev ${rev} in effect since step ${fromStep}`
        : `${what} rev ${rev} applies from step ${fromStep}`;
    }

    async control(action) {
      try {
        const status = await api("POST", this.path(`/${action}`));
        this.setState(status.state, status);
        if (action === "resume") follow();
      } catch (e) { say(e.message, true); }
    }

    async apply() {
      try {
        const receipt = await api("PATCH", this.path("/condition"), conditionFromControls(this.numImages()));
        this.receipt(receipt.rev, receipt.applies_from_step);
        say(`${this.id}: the new condition applies from step ${receipt.applies_from_step}`);
      } catch (e) { say(e.message, true); }
    }

    // A new mask (if painted since this branch last got one) and a new strength (if moved), from the next step.
    async applyEdit() {
      try {
        const body = {};
        if (state.edit.mask_image && editor.size && editor.version !== this.maskVersion) {
          if (!maskPainted()) throw new Error("paint a mask first: an inpainting edit keeps a mask");
          body.mask_image = (await uploadImage(await maskPng(), "image/png")).image_id;
        }
        const strength = Number($("#strength").value);
        if (!fixedStrength(!!state.edit.mask_image) && editor.size && strength !== this.strength) body.strength = strength;
        if (!Object.keys(body).length) {
          say(`${this.id}: nothing to apply (paint the mask or move the strength first)`);
          return;
        }
        const receipt = await api("PATCH", this.path("/edit"), body);
        if (body.mask_image) this.maskVersion = editor.version;
        if (body.strength !== undefined) this.strength = body.strength;
        this.receipt(receipt.rev, receipt.applies_from_step, Object.keys(body));
        say(`${this.id}: the new ${Object.keys(body).join(" and ").replace("mask_image", "mask")} applies from step ` +
            `${receipt.applies_from_step}`);
      } catch (e) { say(e.message, true); }
    }

    numImages() {
      const frame = this.latest();
      return frame && frame.images.length ? frame.images.length : requestFromControls().num_images;
    }

    async fork(image) {
      const count = parseInt($(".fork-count", this.el).value, 10) || 2;
      try {
        const made = await api("POST", this.path("/fork"), image == null ? { count } : { count, image });
        say(`forked ${this.id} at step ${made.at_step}: ${made.branches.join(", ")}`);
        follow();
      } catch (e) { say(e.message, true); }
    }

    async prune() {
      try {
        await api("DELETE", this.path());
        removeView(this.id);
      } catch (e) { say(e.message, true); }
    }
  }

  function view(id) {
    if (!state.views.has(id)) {
      const v = new BranchView(id);
      state.views.set(id, v);
      const box = $("#branches");
      // the tree order: after its parent's subtree
      box.append(v.el);
    }
    return state.views.get(id);
  }

  function removeView(id) {
    const v = state.views.get(id);
    if (v) v.el.remove();
    state.views.delete(id);
    renderTree();
  }

  async function pick(id) {
    for (const other of [...state.views.keys()]) {
      if (other === id) continue;
      try { await api("DELETE", `/v1/sessions/${state.session}/branches/${other}`); } catch (_) { /* already gone */ }
      removeView(other);
    }
  }

  function renderTree() {
    const tree = $("#tree");
    const children = new Map();
    for (const v of state.views.values()) {
      const parent = v.parent && state.views.has(v.parent) ? v.parent : null;
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(v);
    }
    const build = (parent) => {
      const list = document.createElement("ul");
      for (const v of children.get(parent) || []) {
        const item = document.createElement("li");
        const link = document.createElement("button");
        link.type = "button";
        link.className = `node ${v.state}`;
        link.textContent = v.kind === "vanilla" ? "vanilla" : v.id;
        link.title = v.state;
        link.addEventListener("click", () => v.el.scrollIntoView({ behavior: "smooth", block: "nearest" }));
        item.append(link);
        if (children.has(v.id)) item.append(build(v.id));
        list.append(item);
      }
      return list;
    };
    tree.replaceChildren(build(null));
  }

  // -- events ---------------------------------------------------------------------------------------
  function handle(event) {
    if (event.id !== null) {
      if (event.id <= state.lastEventId) return;  // already seen (a resumed stream)
      state.lastEventId = event.id;
    }
    const data = JSON.parse(event.data);
    if (event.type === "frame") {
      view(data.branch).addFrame(data);
    } else if (event.type === "status") {
      if (data.pruned) return removeView(data.branch);
      view(data.branch).setState(data.state, data);
    } else if (event.type === "condition") {
      view(data.branch).receipt(data.rev, data.applies_from_step, data.fields);
    } else if (event.type === "fork") {
      data.branches.forEach((id, k) => view(id).describe({
        parent: data.parent, at_step: data.at_step, image: data.image, count: data.count, seed: data.seeds[k],
      }));
      renderTree();
    }
  }

  function parseEvent(block) {
    const event = { id: null, type: "message", data: "" };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") event.id = Number(value);
      else if (field === "event") event.type = value;
      else if (field === "data") event.data += (event.data ? "\n" : "") + value;
    }
    return event.data ? event : null;
  }

  const allTerminal = () => [...state.views.values()].every((v) => TERMINAL.has(v.state));
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Follow the session's events until every branch is terminal; resume after any interruption.
  async function follow() {
    if (state.streaming || !state.session) return;
    state.streaming = true;
    const session = state.session;
    const abort = new AbortController();
    state.abort = abort;
    let failures = 0;
    try {
      while (state.session === session && !abort.signal.aborted) {
        try {
          const response = await fetch(`/v1/sessions/${session}/events`, {
            headers: headers({ "Last-Event-ID": String(state.lastEventId) }), signal: abort.signal, cache: "no-store",
          });
          if (response.status === 404) { sessionGone(); return; }
          if (!response.ok) throw new Error(`events: ${response.status}`);
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const event = parseEvent(buffer.slice(0, end));
              buffer = buffer.slice(end + 2);
              if (event && state.session === session) handle(event);
            }
          }
          failures = 0;
          if (allTerminal()) return;  // the server closes the stream when every branch is terminal
        } catch (e) {
          if (abort.signal.aborted) return;
          failures += 1;
        }
        await sleep(Math.min(5000, 250 * 2 ** failures));
      }
    } finally {
      if (state.abort === abort) state.streaming = false;
    }
  }

  function sessionGone() {
    say("this session no longer exists on the server (deleted or expired)", true);
    for (const v of state.views.values()) if (!TERMINAL.has(v.state)) v.setState("expired");
  }

  // -- sessions -------------------------------------------------------------------------------------
  function clearSession() {
    if (state.abort) state.abort.abort();
    state.streaming = false;
    state.session = null;
    state.edit = null;
    state.lastEventId = 0;
    state.views.clear();
    $("#session-edit").hidden = true;
    $("#branches").replaceChildren();
    $("#tree").replaceChildren();
    $("#session").hidden = true;
    $("#empty").hidden = false;
  }

  function openSession(id, checkpoints, edit) {
    clearSession();
    state.session = id;
    state.checkpoints = checkpoints;
    state.edit = edit || null;
    $("#session-edit").hidden = !state.edit;
    if (state.edit) {
      setImage($("#session-input"), state.edit.image_url);
      $("#session-mask").hidden = !state.edit.mask_image_url;
      if (state.edit.mask_image_url) setImage($("#session-mask"), state.edit.mask_image_url);
    }
    $("#session-id").textContent = id;
    $("#log-link").href = `/v1/sessions/${id}/log`;
    $("#log-link").download = `studio-log-${id}.json`;
    $("#session").hidden = false;
    $("#empty").hidden = true;
    $("#plan").textContent = `frames at ${checkpoints.join(", ")} NFEs`;
    history.replaceState(null, "", `#s=${id}`);
    sessionStorage.setItem("studio-session", id);
  }

  async function start(event) {
    event.preventDefault();
    if (state.starting) return;
    state.starting = true;
    $("#start").disabled = true;
    say("");
    performance.clearMarks();
    performance.mark("studio-start");
    state.firstFramePainted = false;
    const previous = state.session;
    try {
      const body = { ...requestFromControls(), ...(await editFields()) };
      let created;
      try {
        created = await api("POST", "/v1/sessions", body);
      } catch (e) {
        if (e.status !== 429) throw e;
        if (previous) {  // our own previous session makes room
          await api("DELETE", `/v1/sessions/${previous}`).catch(() => {});
        } else {  // the server is full: honour Retry-After (bounded), then try once more
          const wait = Math.min(e.retryAfter || 5, 60);
          say(`the server is busy: retrying in ${wait} s`);
          await sleep(wait * 1000);
        }
        created = await api("POST", "/v1/sessions", body);
        say("");
      }
      if (previous && previous !== created.session_id) api("DELETE", `/v1/sessions/${previous}`).catch(() => {});
      openSession(created.session_id, created.checkpoints, created.edit);
      for (const id of created.branches) view(id);
      follow();
      refreshServer();
    } catch (e) {
      say(e.message, true);
    } finally {
      state.starting = false;
      $("#start").disabled = false;
    }
  }

  // A reload (or a shared #s=ID) resumes a session: the snapshot has every frame, the stream the rest.
  async function resume(id) {
    let snapshot;
    try {
      snapshot = await api("GET", `/v1/sessions/${id}`);
    } catch (e) {
      sessionStorage.removeItem("studio-session");
      history.replaceState(null, "", location.pathname);
      if (e.status !== 404) say(e.message, true);
      return;
    }
    openSession(id, snapshot.checkpoints, snapshot.edit);
    for (const b of snapshot.branches) {
      const v = view(b.branch);
      v.describe({ ...b, count: b.num_images });
      if (b.edit) v.strength = b.edit.strength;
      for (const frame of b.frames) v.addFrame(frame);
      v.setState(b.state, b);
      if (b.pending.length) {
        const last = b.pending[b.pending.length - 1];
        v.receipt(last.rev, last.applies_from_step, Object.keys(last.changes));
      }
    }
    state.lastEventId = snapshot.last_event_id;
    renderTree();
    follow();
  }

  async function closeSession() {
    const id = state.session;
    clearSession();
    history.replaceState(null, "", location.pathname);
    sessionStorage.removeItem("studio-session");
    if (id) await api("DELETE", `/v1/sessions/${id}`).catch(() => {});
    refreshServer();
  }

  // -- start-up -------------------------------------------------------------------------------------
  async function main() {
    const tokenMatch = location.hash.match(/token=([^&]+)/);
    if (tokenMatch) {
      sessionStorage.setItem("studio-token", decodeURIComponent(tokenMatch[1]));
      history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
    }
    state.token = sessionStorage.getItem("studio-token");
    $("#controls").addEventListener("submit", start);
    $("#random-seed").addEventListener("click", () => { $("#seed").value = Math.floor(Math.random() * 2 ** 31); });
    $("#close-session").addEventListener("click", closeSession);
    $("#log-link").addEventListener("click", (event) => {
      if (!state.token) return;
      event.preventDefault();
      download($("#log-link").href, $("#log-link").download);
    });
    try {
      state.health = await api("GET", "/v1/health");
    } catch (e) {
      $("#server").textContent = e.status === 401 ? "this server needs its token: open the URL it printed" : e.message;
      $("#start").disabled = true;
      return;
    }
    setupControls(state.health);
    setupEditor();
    document.body.dataset.ready = "true";
    const sessionMatch = location.hash.match(/s=([\w-]+)/);
    const id = sessionMatch ? sessionMatch[1] : sessionStorage.getItem("studio-session");
    if (id) await resume(id);
  }

  main();
})();
