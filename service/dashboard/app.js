// The dashboard's entry point: a hash router over the views, polling the API every few
// seconds, and the token prompt when the server answers 401.

import { getToken, setToken, takeTokenFromFragment } from "./api.js";
import { jobView } from "./job.js";
import { jobsView, mirrorsView, politenessView, workersView } from "./views.js";

const POLL_MS = 2000;
const main = document.getElementById("main");
const status = document.getElementById("status");
const tokenForm = document.getElementById("token-form");
const tokenInput = document.getElementById("token-input");
const tokenReason = document.getElementById("token-reason");
const forget = document.getElementById("forget-token");

const ROUTES = [
  [/^\/?$/, "jobs", (root) => jobsView(root)],
  [/^\/mirrors$/, "mirrors", (root) => mirrorsView(root)],
  [/^\/workers$/, "workers", (root) => workersView(root)],
  [/^\/politeness$/, "politeness", (root) => politenessView(root)],
  [/^\/jobs\/([^/]+)$/, "jobs", (root, id) => jobView(root, decodeURIComponent(id), () => schedule(0))],
];

let current = null;
let timer = null;
let busy = false;
let again = false;
let waitingForToken = false;

function route() {
  const path = location.hash.replace(/^#/, "") || "/";
  for (const [pattern, nav, make] of ROUTES) {
    const match = path.match(pattern);
    if (match) return { key: path, nav, make: (root) => make(root, ...match.slice(1)) };
  }
  return { key: "/", nav: "jobs", make: (root) => jobsView(root) };
}

function show(r) {
  main.replaceChildren();
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === r.nav);
  }
  current = { key: r.key, view: r.make(main) };
}

function setStatus(text, bad = false) {
  status.textContent = text;
  status.classList.toggle("bad", bad);
}

function askForToken(reason) {
  waitingForToken = true;
  tokenReason.textContent = reason;
  tokenForm.hidden = false;
  main.hidden = true;
  tokenInput.focus();
  setStatus("token needed", true);
}

async function step() {
  const r = route();
  if (!current || current.key !== r.key) show(r);
  try {
    await current.view.refresh();
    main.hidden = false;
    tokenForm.hidden = true;
    forget.hidden = !getToken();
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    if (err.status === 401) {
      askForToken(getToken() ? "The token was refused; enter the server's token."
        : "This server needs its API token.");
    } else {
      setStatus(err.message, true);
    }
  }
}

/** Refresh after ``delay`` ms; never two refreshes at once, never while asking for a token. */
function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    await step();
    busy = false;
    if (waitingForToken) return;
    schedule(again ? 0 : POLL_MS);
    again = false;
  }, delay);
}

tokenForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  setToken(tokenInput.value.trim());
  tokenInput.value = "";
  waitingForToken = false;
  schedule(0);
});

forget.addEventListener("click", () => {
  setToken(null);
  current = null;
  schedule(0);
});

window.addEventListener("hashchange", () => {
  takeTokenFromFragment();
  waitingForToken = false;
  schedule(0);
});

takeTokenFromFragment();
schedule(0);
