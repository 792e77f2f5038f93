/* ReconAD console: actions with the session's CSRF token, and uPlot charts of downsampled
   series. No build step: plain ES2017, served as is. */
(function () {
  "use strict";

  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function toast(message, kind) {
    const box = $("#toast");
    if (!box) return;
    box.textContent = message;
    box.className = "show " + (kind || "ok");
    clearTimeout(box._timer);
    box._timer = setTimeout(() => { box.className = ""; }, kind === "error" ? 12000 : 4000);
  }

  // A JSON call; a 304 (the caller sent If-None-Match in `headers`) returns null.
  async function api(method, url, body, headers, onResponse) {
    const init = { method, credentials: "same-origin", headers: Object.assign({ "X-CSRF-Token": csrf }, headers) };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    if (onResponse) onResponse(response);
    if (response.status === 304) return null;
    const text = await response.text();
    let payload = null;
    try { payload = text ? JSON.parse(text) : null; } catch (e) { payload = { detail: text }; }
    if (!response.ok) {
      const detail = payload && payload.detail ? payload.detail : response.statusText;
      const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      error.status = response.status;
      throw error;
    }
    return payload;
  }

  function fmtTime(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    // As the server-rendered tables write times: "2026-11-29 15:41:00 UTC".
    return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function fmt(value) {
    if (value === null || value === undefined) return "—";
    return Math.abs(value) >= 1000 || Math.abs(value) < 0.01 ? value.toExponential(3) : value.toFixed(3);
  }

  function escapeHtml(value) {
    return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // ------------------------------------------------------------------ buttons with an action
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      const note = button.dataset.note ? $(button.dataset.note) : null;
      if (body && note && note.value.trim()) body.note = note.value.trim();
      const result = await api("POST", button.dataset.action, body);
      toast(button.textContent.trim() + ": done", "ok");
      if (button.dataset.then === "job" && result && result.id) {
        window.location.href = "/ui/jobs/" + result.id;
      } else {
        setTimeout(() => window.location.reload(), 400);
      }
    } catch (error) {
      toast(error.message, "error");
      button.disabled = false;
    }
  });

  // ------------------------------------------------------------------ charts
  // Every time axis reads UTC, as the tables do.
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");
  const palette = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2"];

  function chartWidth(el) {
    return Math.max(300, Math.floor((el.clientWidth || 900) - 4));
  }

  // Flagged stretches shaded red over the whole plot; the live anomaly events (from the
  // streams) as an orange strip along the top, darker while open.
  function shadeFlags(getBody) {
    return {
      hooks: {
        drawClear: [(u) => {
          const data = getBody();
          if (!data) return;
          const ctx = u.ctx;
          ctx.save();
          if (data.flag) {
            const { x, flag } = data;
            ctx.fillStyle = "rgba(220, 38, 38, 0.16)";
            let i = 0;
            while (i < x.length) {
              if (flag[i] > 0) {
                let j = i;
                while (j + 1 < x.length && flag[j + 1] > 0) j++;
                const left = u.valToPos(x[i], "x", true);
                const right = u.valToPos(x[j], "x", true);
                ctx.fillRect(left - 1, u.bbox.top, Math.max(right - left, 0) + 2, u.bbox.height);
                i = j + 1;
              } else {
                i++;
              }
            }
          }
          const strip = Math.max(4, Math.round(6 * (window.devicePixelRatio || 1)));
          (data.events || []).forEach((ev) => {
            const left = u.valToPos(ev.start, "x", true);
            const right = u.valToPos(ev.end, "x", true);
            ctx.fillStyle = ev.status === "open" ? "rgba(234, 88, 12, 0.85)" : "rgba(234, 88, 12, 0.5)";
            ctx.fillRect(left - 1, u.bbox.top, Math.max(right - left, 0) + 2, strip);
          });
          ctx.restore();
        }],
      },
    };
  }

  function seriesView(root) {
    const model = root.dataset.model;
    const holder = $("#charts", root);
    const status = $("#series-status", root);
    const slider = $("#sensitivity");
    const keyPick = $("#series-key");
    const state = { lo: null, hi: null, charts: [], last: null, key: "", again: null, seq: 0, url: "", etag: null, liveUrl: "", liveTag: null };

    function chosen() {
      return $$("#feature-picks input:checked").map((el) => el.value);
    }

    function onSelect(u) {
      if (u.select.width < 3) return;
      const lo = u.posToVal(u.select.left, "x");
      const hi = u.posToVal(u.select.left + u.select.width, "x");
      u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
      load(lo, hi);
    }

    function onClick(u) {
      const left = u.cursor.left;
      if (left === undefined || left < 0) return;
      explain(u.posToVal(left, "x"));
    }

    function build(body) {
      state.charts.forEach((c) => c.destroy());
      state.charts = [];
      holder.innerHTML = "";
      const width = chartWidth(holder);
      const sync = uPlot.sync("series-" + model);
      const common = (title, height) => ({
        title, width, height,
        cursor: { sync: { key: sync.key }, drag: { x: true, y: false, setScale: false } },
        scales: { x: { time: true } },
        tzDate: utc,
        legend: { live: true },
        hooks: { setSelect: [onSelect], ready: [(u) => u.over.addEventListener("click", () => onClick(u))] },
      });
      body.chosen.forEach((name, k) => {
        const color = palette[k % palette.length];
        const opts = common(name, 210);
        opts.series = [
          {},
          { label: name, stroke: color, width: 1 },
          { label: "expected", stroke: "#6b7280", width: 1, dash: [4, 3] },
          { label: "lower", stroke: "rgba(107,114,128,0.35)", width: 1 },
          { label: "upper", stroke: "rgba(107,114,128,0.35)", width: 1 },
        ];
        opts.bands = [{ series: [4, 3], fill: "rgba(107,114,128,0.14)" }];
        opts.plugins = [shadeFlags(() => state.last)];
        const el = document.createElement("div");
        el.className = "chart";
        el.dataset.feature = name;
        holder.appendChild(el);
        state.charts.push(new uPlot(opts, featureData(body, name), el));
      });
      const opts = common("anomaly score", 170);
      opts.series = [
        {},
        { label: "score", stroke: "#111827", width: 1 },
        { label: "threshold", stroke: "#dc2626", width: 1, dash: [6, 4] },
      ];
      opts.scales.y = { distr: 3 };
      opts.plugins = [shadeFlags(() => state.last)];
      const el = document.createElement("div");
      el.className = "chart";
      el.dataset.feature = "score";
      holder.appendChild(el);
      state.charts.push(new uPlot(opts, scoreData(body), el));
      state.key = body.chosen.join("|");
    }

    // Until the version has scored the stored series, a body has its values only.
    const none = (body) => body.x.map(() => null);

    function featureData(body, name) {
      const s = body.series[name];
      return [body.x, s.value, s.expected || none(body), s.lower || none(body), s.upper || none(body)];
    }

    function scoreData(body) {
      const positive = body.score ? body.score.map((v) => (v === null ? null : Math.max(v, 1e-6))) : none(body);
      return [body.x, positive, body.x.map(() => body.preview_threshold)];
    }

    // After each answer the page asks again: for the chart every second while the version
    // scores the stored series, then every POLL_MS for the live events and the history's size
    // (/live: it starts no scoring; new data waits for "Show it"). The ETag of the last answer
    // goes along, so an unchanged state is a bodiless 304.
    const POLL_MS = 5000;
    function again(ms) {
      clearTimeout(state.again);
      state.again = setTimeout(() => {
        if (document.hidden) { again(ms); return; }
        if (state.last && state.last.scored) live(); else load(state.lo, state.hi, true);
      }, ms);
    }

    async function live() {
      const seq = state.seq;
      const params = new URLSearchParams();
      params.set("version", $("#version").value);
      if (keyPick.value) params.set("key", keyPick.value);
      if (state.lo !== null) params.set("start", String(state.lo));
      if (state.hi !== null) params.set("end", String(state.hi));
      const url = "/ui/api/models/" + model + "/live?" + params.toString();
      const headers = state.liveUrl === url && state.liveTag ? { "If-None-Match": state.liveTag } : {};
      let body;
      let etag = null;
      try {
        body = await api("GET", url, undefined, headers, (r) => { etag = r.headers.get("ETag"); });
      } catch (error) {
        if (seq === state.seq) again(POLL_MS);
        return;
      }
      if (seq !== state.seq) return;  // a chart request since: it schedules the next poll
      holder.dataset.polls = String(Number(holder.dataset.polls || 0) + 1);
      if (body === null) {
        holder.dataset.unchanged = String(Number(holder.dataset.unchanged || 0) + 1);
        again(POLL_MS);
        return;
      }
      state.liveUrl = url;
      state.liveTag = etag;
      state.last.events = body.events;
      holder.dataset.events = String(body.events.length);
      state.charts.forEach((c) => c.redraw(false));
      const shown = state.last.history || {};
      $("#series-new").hidden = body.history.points === shown.points && body.history.end === shown.end;
      again(POLL_MS);
    }

    async function load(lo, hi, poll) {
      clearTimeout(state.again);
      state.lo = lo;
      state.hi = hi;
      const seq = ++state.seq;
      const params = new URLSearchParams();
      params.set("version", $("#version").value);
      params.set("width", String(chartWidth(holder)));
      params.set("sensitivity", slider.value);
      if (keyPick.value) params.set("key", keyPick.value);
      if (lo !== null) params.set("start", String(lo));
      if (hi !== null) params.set("end", String(hi));
      chosen().forEach((f) => params.append("feature", f));
      const url = "/ui/api/models/" + model + "/series?" + params.toString();
      if (!poll) status.textContent = "Loading…";
      const started = performance.now();
      const headers = poll && state.url === url && state.etag ? { "If-None-Match": state.etag } : {};
      let body;
      let etag = null;
      try {
        body = await api("GET", url, undefined, headers, (r) => { etag = r.headers.get("ETag"); });
      } catch (error) {
        if (seq !== state.seq) return;
        status.textContent = error.message;
        status.className = "error";
        if (poll) again(POLL_MS);
        return;
      }
      if (seq !== state.seq) return;  // a newer request (a zoom, the slider) has been made
      if (poll) holder.dataset.polls = String(Number(holder.dataset.polls || 0) + 1);
      if (body === null) {  // 304: nothing changed
        holder.dataset.unchanged = String(Number(holder.dataset.unchanged || 0) + 1);
        again(state.last && !state.last.scored ? 1000 : POLL_MS);
        return;
      }
      state.url = url;
      state.etag = etag;
      state.last = body;
      $("#series-new").hidden = true;
      if (body.keys.length && !keyPick.options.length) {
        // A model with a key column: one chart per series, chosen here.
        keyPick.innerHTML = body.keys.map((k) => `<option>${escapeHtml(k)}</option>`).join("");
        keyPick.value = body.key;
        $("#key-pick").hidden = false;
      }
      if (body.chosen.join("|") !== state.key || !state.charts.length) {
        build(body);
      } else {
        body.chosen.forEach((name, k) => state.charts[k].setData(featureData(body, name)));
        state.charts[state.charts.length - 1].setData(scoreData(body));
      }
      holder.dataset.loaded = String(body.n_points);
      holder.dataset.lo = String(lo === null ? body.range[0] : lo);
      holder.dataset.hi = String(hi === null ? body.range[1] : hi);
      holder.dataset.drawn = String(body.x.length);
      holder.dataset.scored = String(body.scored);
      holder.dataset.events = String(body.events.length);
      const cut = body.stored_points > body.scored_points
        ? ` (the latest ${body.scored_points.toLocaleString()} of ${body.stored_points.toLocaleString()} stored)` : "";
      status.className = "sub";
      const view = `v${body.version}: ${body.n_points.toLocaleString()} points in view${cut}, ` +
        (body.raw ? "every point shown" : `${body.x.length.toLocaleString()} drawn (min/max per pixel column)`);
      if (!body.scored) {
        // The version is scoring the stored series in the background: ask again shortly.
        status.textContent = `${view} · scoring the stored series… · ${Math.round(performance.now() - started)} ms`;
        again(1000);
        stretches(body);
        return;
      }
      again(POLL_MS);
      status.textContent = view +
        ` · ${body.n_flagged.toLocaleString()} flagged in ${body.n_stretches.toLocaleString()} ${body.n_stretches === 1 ? "stretch" : "stretches"} at sensitivity ${body.sensitivity}` +
        ` (threshold ${fmt(body.preview_threshold)}; calibrated ${fmt(body.threshold)})` +
        ` · ${Math.round(performance.now() - started)} ms`;
      holder.dataset.flagged = String(body.n_flagged);
      stretches(body);
    }

    function stretches(body) {
      const tbody = $("#stretches tbody");
      $("#stretch-count").textContent = body.n_stretches === null ? "…"
        : body.n_stretches > body.stretches.length
        ? `${body.n_stretches} (the ${body.stretches.length} strongest listed)` : String(body.n_stretches);
      tbody.innerHTML = body.stretches.map((s) =>
        `<tr data-start="${s.start}" data-end="${s.end}"><td>${fmtTime(s.start)}</td><td>${fmtTime(s.end)}</td>` +
        `<td>${s.n_points}</td><td>${fmt(s.peak)}</td><td>` +
        s.top_features.map(([f, v]) => `${escapeHtml(f)} <span class="sub">${fmt(v)}</span>`).join(", ") +
        "</td></tr>").join("");
    }

    async function explain(at) {
      const params = new URLSearchParams({ at: String(at), version: $("#version").value });
      if (keyPick.value) params.set("key", keyPick.value);
      try {
        const p = await api("GET", "/ui/api/models/" + model + "/explain?" + params.toString());
        $("#point-detail").innerHTML =
          `<div><b>${fmtTime(p.t)}</b> · score ${fmt(p.score)} (threshold ${fmt(p.threshold)}` +
          (state.last && state.last.sensitivity !== 50 ? `; ${fmt(state.last.preview_threshold)} at sensitivity ${state.last.sensitivity}` : "") +
          ")</div>" +
          "<table class='grid compact'><thead><tr><th>Feature</th><th>Value</th><th>Expected</th><th>Contribution</th></tr></thead><tbody>" +
          p.contributions.map(([f, c]) =>
            `<tr><td>${escapeHtml(f)}</td><td>${fmt(p.values[f])}</td><td>${fmt(p.expected[f])}</td><td>${fmt(c)}</td></tr>`).join("") +
          "</tbody></table>";
      } catch (error) {
        toast(error.message, "error");
      }
    }

    $("#stretches").addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-start]");
      if (!row) return;
      const start = Number(row.dataset.start);
      const end = Number(row.dataset.end);
      const whole = state.last ? state.last.range[1] - state.last.range[0] : 0;
      const pad = Math.max((end - start) * 2, whole / 1000, 60);
      load(start - pad, end + pad);
    });
    let timer = null;
    slider.addEventListener("input", () => {
      $("#sensitivity-value").textContent = slider.value;
      clearTimeout(timer);
      timer = setTimeout(() => load(state.lo, state.hi), 150);
    });
    $$("#feature-picks input").forEach((el) => el.addEventListener("change", () => load(state.lo, state.hi)));
    $("#version").addEventListener("change", () => load(null, null));
    keyPick.addEventListener("change", () => load(null, null));
    $("#reset-zoom").addEventListener("click", () => load(null, null));
    $("#series-refresh").addEventListener("click", () => load(state.lo, state.hi));
    // Pan by half the view and zoom out by two, inside the stored range.
    function shown() {
      if (!state.last) return null;
      const [first, last] = state.last.range;
      return [state.lo === null ? first : state.lo, state.hi === null ? last : state.hi, first, last];
    }
    function pan(fraction) {
      const view = shown();
      if (!view) return;
      const [lo, hi, first, last] = view;
      const shift = Math.max(first - lo, Math.min(last - hi, (hi - lo) * fraction));
      if (shift !== 0) load(lo + shift, hi + shift);
    }
    $("#pan-left").addEventListener("click", () => pan(-0.5));
    $("#pan-right").addEventListener("click", () => pan(0.5));
    $("#zoom-out").addEventListener("click", () => {
      const view = shown();
      if (!view) return;
      const [lo, hi, first, last] = view;
      const mid = (lo + hi) / 2;
      const a = Math.max(first, mid - (hi - lo));
      const b = Math.min(last, mid + (hi - lo));
      if (a <= first && b >= last) load(null, null); else load(a, b);
    });
    // A link may open the page zoomed (an event's plot): ?start=..&end=.. in seconds.
    const query = new URLSearchParams(window.location.search);
    const lo = Number(query.get("start"));
    const hi = Number(query.get("end"));
    if ($("#version").value) load(query.has("start") && isFinite(lo) ? lo : null, query.has("end") && isFinite(hi) ? hi : null);
  }

  // ------------------------------------------------------------------ train form
  function trainForm(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {};
      const last = form.elements.last.value.trim();
      if (last) body.last = last;
      const promote = form.elements.promote.value;
      if (promote) body.promote = promote === "true";
      try {
        const job = await api("POST", "/ui/api/models/" + form.dataset.model + "/train", body);
        window.location.href = "/ui/jobs/" + job.id;
      } catch (error) {
        toast(error.message, "error");
      }
    });
  }

  // ------------------------------------------------------------------ jobs
  function jobsTable(table) {
    const live = () => $$("tr[data-job]", table).some((row) => /queued|running/.test(row.textContent));
    async function poll() {
      if (!live()) return;
      const params = new URLSearchParams({ limit: "100" });
      if (table.dataset.model) params.set("model", table.dataset.model);
      try {
        const page = await api("GET", "/ui/api/jobs?" + params.toString());
        let ended = false;
        page.data.forEach((job) => {
          const row = $(`tr[data-job="${job.id}"]`, table);
          if (!row) { ended = true; return; }
          const state = $(".state", row);
          if (state.textContent !== job.status) {
            if (!/queued|running/.test(job.status)) ended = true;
            state.textContent = job.status;
            state.className = "state state-" + job.status;
          }
          const p = job.progress || {};
          $(".progress-cell", row).textContent = p.epoch ? `epoch ${p.epoch}/${p.max_epochs}` : (p.stage || "");
        });
        if (ended) { window.location.reload(); return; }
      } catch (error) {
        toast(error.message, "error");
      }
      setTimeout(poll, 1000);
    }
    setTimeout(poll, 1000);
  }

  function jobView(root) {
    const id = root.dataset.job;
    const curve = new Map();
    let chart = null;
    function draw() {
      const epochs = Array.from(curve.keys()).sort((a, b) => a - b);
      const data = [epochs, epochs.map((e) => curve.get(e).train), epochs.map((e) => curve.get(e).val)];
      $("#loss-chart").dataset.epochs = String(epochs.length);
      if (!epochs.length) return;
      if (!chart) {
        chart = new uPlot({
          width: chartWidth($("#loss-chart")), height: 260,
          scales: { x: { time: false } },
          axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }, { label: "loss" }],
          series: [{ label: "epoch" }, { label: "train", stroke: "#2563eb", width: 2, points: { show: true } },
            { label: "validation", stroke: "#d97706", width: 2, points: { show: true } }],
        }, data, $("#loss-chart"));
      } else {
        chart.setData(data);
      }
    }
    async function poll() {
      let job;
      try {
        job = await api("GET", "/ui/api/jobs/" + id);
      } catch (error) {
        toast(error.message, "error");
        return;
      }
      const p = job.progress || {};
      (p.curve || []).forEach((row) => curve.set(row.epoch, row));
      if (p.epoch && p.losses) curve.set(p.epoch, { epoch: p.epoch, train: p.losses.train, val: p.losses.val });
      (job.history || []).forEach((row) => curve.set(row.epoch, { epoch: row.epoch, train: row.train, val: row.val }));
      draw();
      const state = $("#job-status");
      state.textContent = job.status;
      state.className = "state state-" + job.status;
      $("#job-progress").textContent = p.epoch ? `epoch ${p.epoch} of at most ${p.max_epochs}, ${fmt(p.elapsed_s)} s` : (p.stage || "");
      $("#loss-note").textContent = curve.size ? "" : "No epoch finished yet.";
      if (/queued|running/.test(job.status)) {
        setTimeout(poll, 700);
      } else {
        $("#job-result").innerHTML = job.version ? `v${job.version}${job.promoted ? " (promoted)" : " (not promoted)"}` :
          (job.error ? `<span class="error">${escapeHtml(job.error)}</span>` : "");
        $("#job-finished").textContent = job.finished_at ? fmtTime(Date.parse(job.finished_at) / 1000) : "—";
        $("#job-cancel").hidden = true;
        $("#job-retry").hidden = !/failed|cancelled|interrupted/.test(job.status);
        root.dataset.final = job.status;
      }
    }
    poll();
  }

  // ------------------------------------------------------------------ versions side by side
  function compareView(root) {
    async function go() {
      const params = new URLSearchParams({ a: $("#cmp-a").value, b: $("#cmp-b").value, width: "560" });
      const holder = $("#cmp-charts");
      try {
        const body = await api("GET", "/ui/api/models/" + root.dataset.model + "/compare?" + params.toString());
        holder.innerHTML = "";
        const sync = uPlot.sync("compare");
        body.versions.forEach((v) => {
          const el = document.createElement("div");
          el.className = "chart";
          holder.appendChild(el);
          const positive = v.score.map((s) => (s === null ? null : Math.max(s, 1e-6)));
          new uPlot({
            title: `v${v.version}: ${v.n_flagged} flagged points, ${v.n_stretches} stretches`,
            width: Math.max(300, el.clientWidth - 4), height: 220,
            cursor: { sync: { key: sync.key } },
            scales: { x: { time: true }, y: { distr: 3 } },
            tzDate: utc,
            series: [{}, { label: "score", stroke: "#111827", width: 1 },
              { label: "threshold", stroke: "#dc2626", dash: [6, 4], width: 1 }],
          }, [v.x, positive, v.x.map(() => v.threshold)], el);
        });
      } catch (error) {
        toast(error.message, "error");
      }
    }
    $("#cmp-go").addEventListener("click", go);
  }

  // ------------------------------------------------------------------ schedules
  function scheduleForm(form) {
    const preview = $("#next-runs");
    let timer = null;
    function spec() {
      const kind = form.elements.kind.value;
      return { kind, value: form.elements.when.value.trim() };
    }
    async function refresh() {
      const { kind, value } = spec();
      $("#when-label").textContent = kind === "cron" ? "Cron" : "Interval";
      if (!value) { preview.textContent = "—"; return; }
      try {
        const body = await api("GET", "/ui/api/schedules/preview?" + new URLSearchParams({ [kind]: value }).toString());
        preview.className = "";
        preview.textContent = body.next_runs.map((t) => t.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC")).join(" · ");
      } catch (error) {
        preview.className = "error";
        preview.textContent = error.message;
      }
    }
    form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 200); });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const { kind, value } = spec();
      const body = { [kind]: value, window: form.elements.window.value.trim(), anchor: form.elements.anchor.value };
      try {
        await api("POST", "/ui/api/models/" + form.elements.model.value + "/schedules", body);
        toast("schedule created", "ok");
        setTimeout(() => window.location.reload(), 300);
      } catch (error) {
        toast(error.message, "error");
      }
    });
    refresh();
  }

  // ------------------------------------------------------------------ data upload
  function uploadView(root) {
    const drop = $("#drop", root);
    const out = $("#preview", root);
    const disabled = drop.classList.contains("disabled");
    let pending = null;
    function form() {
      const data = new FormData();
      data.append("file", pending, pending.name);
      data.append("timestamp_column", $("#timestamp-column").value || "timestamp");
      return data;
    }
    async function previewFile(file) {
      pending = file;
      out.innerHTML = `<p class="sub">Reading ${escapeHtml(file.name)}…</p>`;
      try {
        const p = await api("POST", "/ui/api/models/" + root.dataset.model + "/data/preview", form());
        const missing = Object.entries(p.missing).filter(([, n]) => n > 0).map(([c, n]) => `${escapeHtml(c)}: ${n}`).join(", ");
        out.innerHTML =
          `<p id="preview-summary"><b>${p.rows.toLocaleString()} rows</b> from ${escapeHtml(p.start)} to ${escapeHtml(p.end)}, ` +
          `columns ${p.columns.map(escapeHtml).join(", ")}${missing ? `; empty values: ${missing}` : ""}. ` +
          "Rows with a timestamp already stored replace it.</p>" +
          "<table class='grid compact'><thead><tr><th>timestamp</th>" + p.columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("") +
          "</tr></thead><tbody>" + p.head.map((row) => "<tr>" + row.map((v) => `<td>${v === null ? "—" : escapeHtml(typeof v === "number" ? Number(v.toPrecision(6)) : v)}</td>`).join("") + "</tr>").join("") +
          `</tbody></table><p class="sub">First ${p.head.length} rows shown.</p><button type="button" id="store">Store ${p.rows.toLocaleString()} rows</button>`;
        $("#store").addEventListener("click", store);
      } catch (error) {
        out.innerHTML = `<p class="error" id="upload-error">Refused: ${escapeHtml(error.message)}</p>`;
      }
    }
    async function store() {
      try {
        const r = await api("POST", "/ui/api/models/" + root.dataset.model + "/data/store", form());
        toast(`stored ${r.appended} rows; the model now holds ${r.summary.points}`, "ok");
        setTimeout(() => window.location.reload(), 500);
      } catch (error) {
        out.insertAdjacentHTML("beforeend", `<p class="error" id="upload-error">Refused: ${escapeHtml(error.message)}</p>`);
      }
    }
    if (disabled) return;
    ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); }));
    ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer.files.length) previewFile(e.dataTransfer.files[0]);
    });
    $("#file", root).addEventListener("change", (e) => { if (e.target.files.length) previewFile(e.target.files[0]); });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const view = $("#series-view");
    if (view) seriesView(view);
    const train = $("#train-form");
    if (train) trainForm(train);
    const jobs = $("#jobs");
    if (jobs) jobsTable(jobs);
    const job = $("#job-view");
    if (job) jobView(job);
    const cmp = $("#compare");
    if (cmp) compareView(cmp);
    const sched = $("#schedule-form");
    if (sched) scheduleForm(sched);
    const up = $("#upload");
    if (up) uploadView(up);
  });
})();
