// The shortener's page: plain JavaScript over the JSON API (no framework, no CDN).
"use strict";
const $ = (id) => document.getElementById(id);
const keyInput = $("key");
keyInput.value = localStorage.getItem("url_shortener_key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("url_shortener_key", keyInput.value);
  say("");
  loadLinks();
});

async function api(method, path, body) {
  const headers = { "x-api-key": keyInput.value };
  if (body !== undefined) headers["content-type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = resp.status === 204 ? null : await resp.json();
  if (!resp.ok) throw new Error(data && (data.detail || data.title) || resp.statusText);
  return data;
}

function say(text, error) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function loadLinks() {
  const body = $("links").tBodies[0];
  if (!keyInput.value) {
    say("Enter an API key (the admin key, or one from `keys create`) to see and make links.");
    return;
  }
  try {
    const page = await api("GET", "/api/links?limit=50");
    body.replaceChildren();
    for (const link of page.items) {
      const row = body.insertRow();
      row.dataset.code = link.code;
      const a = document.createElement("a");
      a.href = "/" + link.code;
      a.textContent = link.short_url;
      row.insertCell().append(a);
      cell(row, link.url, "target").title = link.url;
      cell(row, String(link.visits), "visits");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "stats";
      button.className = "show-stats";
      button.addEventListener("click", () => showStats(link.code));
      row.insertCell().append(button);
    }
  } catch (err) {
    say(err.message, true);
  }
}

$("shorten").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { url: $("url").value };
  if ($("alias").value) body.alias = $("alias").value;
  if ($("expires").value) body.expires_at = new Date($("expires").value).toISOString();
  if ($("max").value) body.max_visits = Number($("max").value);
  if ($("password").value) body.password = $("password").value;
  try {
    const link = await api("POST", "/api/links", body);
    say("Created " + link.short_url);
    $("shorten").reset();
    await loadLinks();
  } catch (err) {
    say(err.message, true);
  }
});
$("refresh").addEventListener("click", loadLinks);

function list(id, items, label) {
  $(id).replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    li.textContent = `${item[label]}: ${item.visits}`;
    return li;
  }));
}

function chart(days) {
  // One bar per day, scaled to the busiest day; each bar says its day and count.
  const svg = $("chart");
  const ns = "http://www.w3.org/2000/svg";
  const width = 640, height = 200, bottom = 20;
  const max = Math.max(1, ...days.map((d) => d.visits));
  const step = width / Math.max(days.length, 1);
  svg.replaceChildren();
  days.forEach((d, i) => {
    const h = (height - bottom - 12) * d.visits / max;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", i * step + 2);
    rect.setAttribute("y", height - bottom - h);
    rect.setAttribute("width", Math.max(step - 4, 1));
    rect.setAttribute("height", h);
    rect.dataset.day = d.day;
    rect.dataset.visits = d.visits;
    const title = document.createElementNS(ns, "title");
    title.textContent = `${d.day}: ${d.visits} visits`;
    rect.append(title);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", i * step + 2);
    label.setAttribute("y", height - 6);
    label.textContent = d.day.slice(5);
    svg.append(rect, label);
  });
}

async function showStats(code) {
  try {
    const stats = await api("GET", `/api/links/${encodeURIComponent(code)}/stats`);
    $("stats").hidden = false;
    $("stats-code").textContent = code;
    $("stats-total").textContent =
      `${stats.total} visits, ${stats.unique_visitors} unique; ${stats.humans} humans, ${stats.bots} bots`;
    chart(stats.per_day);
    list("referrers", stats.top_referrers, "referrer");
    list("browsers", stats.browsers, "browser");
  } catch (err) {
    say(err.message, true);
  }
}

loadLinks();
