// fleet-reporter page script. Every value that came from a host is put into the
// page with textContent (or as an attribute value through a DOM property); this
// file never assigns HTML markup from strings.
"use strict";
(function () {
  const STATES = ["flagged", "failed", "rolled-back", "refused", "stale", "pending", "never-seen", "up-to-date", "retired"];
  const LABELS = {
    "flagged": "flagged", "failed": "failed", "rolled-back": "rolled back", "refused": "refused",
    "stale": "stale", "pending": "pending", "never-seen": "never seen", "up-to-date": "up to date",
    "retired": "retired",
  };
  const REFRESH_MS = 30000;
  // Relative to the page, so a stage prefix (/prod/) keeps working.
  const base = (function () {
    let p = location.pathname;
    if (p.endsWith("index.html")) p = p.slice(0, -"index.html".length);
    if (!p.endsWith("/")) p += "/";
    return p;
  })();
  const view = { state: "", q: "", sort: "severity", offset: 0, limit: 200 };
  let detailHost = null;
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  async function getJSON(path) {
    const r = await fetch(base + path, { headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin" });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) {
      const why = body && typeof body.error === "string" ? body.error : r.statusText;
      throw new Error(r.status + ": " + why);
    }
    return body;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    const s = Math.max(0, Number(seconds));
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 129600) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  function generation(g) {
    if (!g || typeof g.closure !== "string") return "—";
    const name = g.closure.replace(/^\/nix\/store\/[0-9a-z]{32}-/, "");
    return (g.sequence !== null && g.sequence !== undefined ? "#" + g.sequence + " " : "") + name;
  }

  function stateBadge(state) {
    const known = STATES.includes(state);
    return el("span", known ? LABELS[state] : String(state), known ? "st st-" + state : "st");
  }

  function showError(msg) {
    const e = $("error");
    e.textContent = msg || "";
    e.hidden = !msg;
  }

  function renderSummary(s) {
    $("generated").textContent = "as of " + new Date(s.generated_at).toLocaleString() +
      " · " + (s.active_hosts !== undefined ? s.active_hosts : s.hosts) + " hosts" +
      (s.retired_hosts && s.retired_hosts.length ? " (+" + s.retired_hosts.length + " retired)" : "") +
      (s.held_hosts && s.held_hosts.length ? " · " + s.held_hosts.length + " held" : "") + " · refresh " + s.refresh.duration_ms + " ms (" +
      (s.refresh.fetched_status + s.refresh.fetched_manifests) + " objects read)";
    const trust = $("trust");
    if (s.manifests.verified) {
      trust.className = "banner";
      trust.textContent = "Manifests verified with publisher key(s): " + s.manifests.keys.join(", ") +
        " · stale after " + s.stale_after_seconds + " s";
    } else {
      trust.className = "banner warn";
      trust.textContent = "Manifests " + s.manifests.note +
        ": the desired generation shown is what each agent reports · stale after " + s.stale_after_seconds + " s";
    }
    const tiles = $("tiles");
    tiles.replaceChildren();
    for (const st of STATES) {
      const b = el("button", null, "tile" + (view.state === st ? " active" : ""));
      b.type = "button";
      b.append(el("span", s.states[st] || 0, "n"), stateBadge(st));
      b.addEventListener("click", () => {
        view.state = view.state === st ? "" : st;
        $("state").value = view.state;
        view.offset = 0;
        load();
      });
      tiles.append(b);
    }
    const ign = s.ignored_objects;
    $("ignored").hidden = !ign || ign.count === 0;
    const list = $("ignored-list");
    list.replaceChildren();
    if (ign) {
      for (const k of ign.keys) list.append(el("li", k, "mono"));
      if (ign.count > ign.keys.length) list.append(el("li", "… and " + (ign.count - ign.keys.length) + " more"));
    }
  }

  function problem(h) {
    if (h.flags && h.flags.length) return h.flags.join("\n");
    if (h.last_error) return h.last_error.kind + ": " + h.last_error.message;
    return "";
  }

  function renderHosts(d) {
    const tbody = $("rows");
    tbody.replaceChildren();
    for (const h of d.hosts) {
      const tr = el("tr");
      tr.dataset.state = STATES.includes(h.state) ? h.state : "unknown";
      const name = el("button", h.host, "link");
      name.type = "button";
      name.addEventListener("click", () => showHost(h.host));
      const hostCell = el("td");
      hostCell.append(name);
      const stateCell = el("td");
      stateCell.append(stateBadge(h.state));
      if (h.hold) {
        // The reason is operator text, still only ever set as text.
        const held = el("span", "held", "st st-held");
        held.title = h.hold.reason;
        stateCell.append(" ", held, " ", el("span", h.hold.reason, "hold-reason"));
      }
      const desired = el("td", generation(h.desired), "mono");
      if (h.desired) desired.title = h.desired.closure + (h.desired_source === "agent-report" ? " (as reported by the agent)" : "");
      if (h.manifest && h.manifest.status === "invalid") desired.textContent = "manifest invalid";
      if (h.manifest && h.manifest.status === "not-verified" && !h.desired) desired.textContent = "not verified";
      const current = el("td", generation(h.current), "mono");
      if (h.current) current.title = h.current.closure;
      const seen = el("td", age(h.age_seconds));
      if (h.last_seen) seen.title = h.last_seen;
      const err = el("td", problem(h), "err");
      const facts = h.facts || {};
      tr.append(
        hostCell, stateCell, el("td", h.agent_state || "—"), desired, current, seen, err,
        el("td", facts.nixos_version || "—"), el("td", facts.kernel || "—", "mono"),
        el("td", facts.reboot_needed === true ? "yes" : facts.reboot_needed === false ? "no" : "—"));
      tbody.append(tr);
    }
    const from = d.matched === 0 ? 0 : d.offset + 1;
    const to = Math.min(d.offset + d.limit, d.matched);
    $("count").textContent = from + "–" + to + " of " + d.matched + (d.matched !== d.total ? " (" + d.total + " in total)" : "");
    $("prev").disabled = d.offset === 0;
    $("next").disabled = d.offset + d.limit >= d.matched;
  }

  function query() {
    const p = new URLSearchParams();
    if (view.state) p.set("state", view.state);
    if (view.q) p.set("q", view.q);
    p.set("sort", view.sort);
    p.set("offset", String(view.offset));
    p.set("limit", String(view.limit));
    return p.toString();
  }

  function renderRollouts(d) {
    const list = d && Array.isArray(d.rollouts) ? d.rollouts : [];
    const tb = $("rollout-rows");
    tb.replaceChildren();
    $("rollouts").hidden = list.length === 0;
    for (const r of list) {
      const tr = el("tr");
      tr.dataset.release = String(r.release);
      if (r.error) {
        const td = el("td", r.error, "muted");
        td.colSpan = 5;
        tr.append(el("td", r.release), td);
        tb.append(tr);
        continue;
      }
      const waves = Array.isArray(r.waves) ? r.waves : [];
      let total = 0, healthy = 0, bad = 0;
      for (const w of waves) {
        total += w.counts.hosts; healthy += w.counts.healthy; bad += w.counts.bad;
      }
      const wave = r.current_wave ? r.current_wave + " of " + r.waves_total : "all " + r.waves_total;
      const progress = healthy + " / " + total + " healthy" + (bad ? ", " + bad + " bad" : "");
      tr.append(
        el("td", r.release),
        el("td", r.phase, "rollout-" + String(r.phase).replace(/[^a-z-]/g, "")),
        el("td", wave),
        el("td", progress),
        el("td", r.halt_reason || "—"),
        el("td", new Date(r.updated_at).toLocaleString()),
      );
      tb.append(tr);
    }
  }

  async function load() {
    getJSON("api/v1/rollouts").then(renderRollouts, (e) => showError("Cannot load the rollouts: " + e.message));
    try {
      const [s, h] = await Promise.all([getJSON("api/v1/summary"), getJSON("api/v1/hosts?" + query())]);
      renderSummary(s);
      renderHosts(h);
      showError("");
      if (detailHost) await showHost(detailHost, true);
    } catch (e) {
      showError("Cannot load the fleet: " + e.message);
    }
  }

  function fact(dl, name, value) {
    dl.append(el("dt", name), el("dd", value === null || value === undefined || value === "" ? "—" : value));
  }

  async function showHost(name, quiet) {
    detailHost = name;
    let d;
    try {
      d = await getJSON("api/v1/hosts/" + encodeURIComponent(name));
    } catch (e) {
      if (!quiet) showError("Cannot load host " + name + ": " + e.message);
      return;
    }
    const h = d.host;
    $("detail").hidden = false;
    $("detail-title").textContent = h.host;
    const dl = $("detail-facts");
    dl.replaceChildren();
    fact(dl, "state", LABELS[h.state] || h.state);
    fact(dl, "agent state", h.agent_state);
    fact(dl, "desired", h.desired ? generation(h.desired) + " (" + h.desired.closure + ", from " + h.desired_source + ")" : null);
    fact(dl, "current", h.current ? generation(h.current) + " (" + h.current.closure + ")" : null);
    const m = h.manifest || {};
    fact(dl, "manifest", m.status === "verified" ? "verified, signed by " + m.signed_by + ", expires " + m.expires_at
      : m.status === "invalid" ? "invalid: " + m.error
      : m.status === "not-verified" ? "not verified (" + m.reason + ")" : "missing");
    const sig = h.status_signature || {};
    fact(dl, "status signature", sig.status === "verified" ? "verified, signed by identity key " + sig.key
      : sig.status === "invalid" ? "invalid: " + sig.error
      : "unverified (host not in the registry)");
    fact(dl, "last seen", h.last_seen ? h.last_seen + " (" + age(h.age_seconds) + ")" : "never");
    fact(dl, "reported at", h.reported_at);
    fact(dl, "agent version", h.agent_version);
    fact(dl, "last error", h.last_error ? h.last_error.kind + " at " + h.last_error.at + ": " + h.last_error.message : null);
    const f = h.facts || {};
    fact(dl, "NixOS", f.nixos_version);
    fact(dl, "kernel", f.kernel);
    fact(dl, "uptime", f.uptime_seconds !== null && f.uptime_seconds !== undefined ? age(f.uptime_seconds).replace(" ago", "") : null);
    fact(dl, "boot id", f.boot_id);
    fact(dl, "reboot needed", f.reboot_needed === true ? "yes" : f.reboot_needed === false ? "no" : null);
    if (h.flags && h.flags.length) fact(dl, "flags", h.flags.join("\n"));
    if (h.notes && h.notes.length) fact(dl, "notes", h.notes.join("\n"));
    const tb = $("event-rows");
    tb.replaceChildren();
    if (d.events_error) tb.append(tr1("cannot list events: " + d.events_error));
    for (const ev of d.events) {
      const r = ev.report;
      const tr = el("tr");
      tr.append(el("td", ev.last_modified));
      if (r) {
        tr.append(el("td", r.state), el("td", generation(r.current), "mono"), el("td", generation(r.desired), "mono"),
          el("td", r.last_error ? r.last_error.kind + ": " + r.last_error.message : "", "err"));
      } else {
        const td = el("td", "flagged: " + ev.flag, "err");
        td.colSpan = 4;
        tr.append(td);
      }
      tb.append(tr);
    }
    if (!d.events.length && !d.events_error) tb.append(tr1("no events"));
  }

  function tr1(text) {
    const tr = el("tr");
    const td = el("td", text, "muted");
    td.colSpan = 5;
    tr.append(td);
    return tr;
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = $("auto").checked ? setInterval(load, REFRESH_MS) : null;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("state").addEventListener("change", (e) => { view.state = e.target.value; view.offset = 0; load(); });
    let typing = null;
    $("q").addEventListener("input", (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => { view.q = e.target.value.trim(); view.offset = 0; load(); }, 250);
    });
    $("sort").addEventListener("change", (e) => { view.sort = e.target.value; view.offset = 0; load(); });
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => {
        const f = th.dataset.sort;
        view.sort = view.sort === f ? "-" + f : f;
        view.offset = 0;
        load();
      });
    }
    $("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - view.limit); load(); });
    $("next").addEventListener("click", () => { view.offset += view.limit; load(); });
    $("refresh").addEventListener("click", load);
    $("auto").addEventListener("change", schedule);
    $("detail-close").addEventListener("click", () => { detailHost = null; $("detail").hidden = true; });
    schedule();
    load();
  });
})();
