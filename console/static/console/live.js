// Live progress in the admin without a page reload: the dashboard and a coordination's page
// poll small JSON views every 2 s and swap in HTML the server rendered with the same
// templates as the page itself. No build step, no framework.
"use strict";

(function () {
  const POLL_MS = 2000;
  const RETRY_MS = 5000;

  function clock() {
    return new Date().toLocaleTimeString();
  }

  function setLive(element, text, failed) {
    if (!element) return;
    element.textContent = text;
    element.classList.toggle("pa-live-error", Boolean(failed));
  }

  async function getJSON(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    });
    if (response.status === 401 || response.status === 403 || response.redirected) {
      throw new Error("signed out: reload the page");
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  // --- The dashboard ---------------------------------------------------------------------

  // Each poll sends back the version it last had: the answer carries only the panels that
  // changed since (nothing at all when nothing did), and the version to send next.
  function startDashboard(root) {
    const url = root.dataset.liveUrl;
    const live = root.querySelector("[data-pa-live]");
    async function poll() {
      let delay = POLL_MS;
      try {
        const version = root.dataset.version;
        const data = await getJSON(version ? url + "?version=" + encodeURIComponent(version) : url);
        for (const [name, html] of Object.entries(data.fragments)) {
          const slot = root.querySelector('[data-pa-fragment="' + name + '"]');
          if (slot && slot.innerHTML !== html) slot.innerHTML = html;
        }
        root.dataset.version = data.version;
        setLive(live, "Live: updated " + clock());
      } catch (error) {
        setLive(live, "Not updating (" + error.message + "); trying again", true);
        delay = RETRY_MS;
      }
      window.setTimeout(poll, delay);
    }
    window.setTimeout(poll, POLL_MS);
  }

  // --- The Deploy form: "all enabled" excludes single environments and tags ---------------

  function startDeployForm(form) {
    const all = form.querySelector('input[name="all_environments"]');
    const choices = form.querySelector("[data-pa-env-choices]");
    if (!all || !choices) return;
    const tags = form.querySelector('input[name="tags"]');
    const boxes = () => Array.from(choices.querySelectorAll('input[name="environments"]'));
    const tagged = () => Boolean(tags && tags.value.replace(/[\s,]/g, ""));
    const sync = () => choices.classList.toggle("pa-all", all.checked);
    all.addEventListener("change", () => {
      if (all.checked) {
        boxes().forEach((box) => (box.checked = false));
        if (tags) tags.value = "";
      }
      sync();
    });
    const chosen = () => {
      all.checked = !boxes().some((box) => box.checked) && !tagged();
      sync();
    };
    choices.addEventListener("change", chosen);
    if (tags) tags.addEventListener("input", chosen);
    sync();
  }

  // --- The Deploy form's count: what the choice selects and the waves its rollout makes ----
  // (by the server's own rules: the JSON says it in words)

  const SELECTION_FIELDS = [
    "all_environments",
    "environments",
    "tags",
    "exclude_tags",
    "batch_size",
    "max_failures",
    "pause_after_first",
    "pause_after_first_seconds",
    "batch_pause_seconds",
    "concurrency",
  ];

  function startDeploySelection(form) {
    const shown = form.querySelector("[data-pa-selection]");
    if (!shown) return;
    let timer = null;
    let asked = 0;

    function show(data) {
      const problems = Object.values(data.errors).flat();
      shown.dataset.count = String(data.count);
      shown.dataset.waves = (data.waves || []).join(",");
      shown.classList.toggle("pa-selection-error", problems.length > 0);
      shown.textContent = problems.length ? problems.join(" ") : data.summary;
      if (problems.length || !data.count) return;
      const names = document.createElement("span");
      names.className = "pa-selection-names";
      names.textContent = data.environments.join(", ");
      shown.appendChild(names);
    }

    async function ask() {
      const query = new URLSearchParams();
      for (const [name, value] of new FormData(form)) {
        if (SELECTION_FIELDS.includes(name)) query.append(name, value);
      }
      const mine = ++asked;
      try {
        const data = await getJSON(shown.dataset.selectionUrl + "?" + query.toString());
        if (mine === asked) show(data); // else a newer choice is being counted
      } catch (error) {
        if (mine === asked) shown.textContent = "Cannot count the environments (" + error.message + ")";
      }
    }

    const soon = () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(ask, 250);
    };
    form.addEventListener("input", soon);
    form.addEventListener("change", soon);
    ask();
  }

  // --- The Deploy form's pause after the first wave: the seconds box goes with "Pause for" --

  function startPauseChoice(form) {
    const choice = form.querySelector('select[name="pause_after_first"]');
    const seconds = form.querySelector('input[name="pause_after_first_seconds"]');
    const box = form.querySelector("[data-pa-pause-seconds]");
    if (!choice || !seconds || !box) return;
    const sync = () => {
      box.hidden = choice.value !== "seconds";
    };
    choice.addEventListener("change", () => {
      sync();
      if (choice.value === "seconds") seconds.focus();
    });
    sync();
  }

  // --- A coordination's page ---------------------------------------------------------------

  function startCoordination(root) {
    const url = root.dataset.liveUrl;
    const live = root.querySelector("[data-pa-live]");
    const events = document.querySelector("[data-pa-events]");
    const targets = document.querySelector("[data-pa-targets]");
    let after = root.dataset.after || "0";

    function show(selector, visible) {
      const element = root.querySelector(selector);
      if (element) element.hidden = !visible;
    }

    function apply(data) {
      root.querySelector("[data-pa-status]").innerHTML = data.status_html;
      const progress = root.querySelector("[data-pa-progress]");
      progress.innerHTML = data.progress_html;
      const summary = document.createElement("span");
      summary.className = "pa-progress-text";
      summary.textContent = data.progress_summary;
      progress.appendChild(summary);
      root.querySelector("[data-pa-duration]").textContent = data.duration;
      const error = root.querySelector("[data-pa-error]");
      error.textContent = data.error;
      error.hidden = !data.error;
      show("[data-pa-approve]", data.can_approve);
      show("[data-pa-cancel]", !data.terminal);
      show("[data-pa-retry]", data.can_retry);
      const rollout = document.querySelector("[data-pa-rollout]");
      if (rollout && data.rollout_html && rollout.innerHTML !== data.rollout_html) {
        rollout.innerHTML = data.rollout_html;
      }
      if (events && data.events_html) {
        events.insertAdjacentHTML("beforeend", data.events_html);
      }
      if (targets) {
        for (const [environmentId, html] of Object.entries(data.targets)) {
          const row = Array.from(targets.querySelectorAll("tr[data-environment]")).find(
            (candidate) => candidate.dataset.environment === environmentId
          );
          if (row) row.outerHTML = html;
          else targets.insertAdjacentHTML("beforeend", html);
        }
      }
      after = String(data.next_after);
      root.dataset.after = after;
      root.dataset.status = data.status;
    }

    async function poll() {
      let delay = POLL_MS;
      try {
        const data = await getJSON(url + "?after=" + encodeURIComponent(after));
        apply(data);
        if (data.finished && !data.has_more) {
          root.dataset.finished = "true";
          setLive(live, "Finished");
          return;
        }
        setLive(live, "Live: updated " + clock());
        if (data.has_more) delay = 0;
      } catch (error) {
        setLive(live, "Not updating (" + error.message + "); trying again", true);
        delay = RETRY_MS;
      }
      window.setTimeout(poll, delay);
    }
    if (root.dataset.finished !== "true") window.setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-pa-dashboard]").forEach(startDashboard);
    document.querySelectorAll("[data-pa-deploy-form]").forEach(startDeployForm);
    document.querySelectorAll("[data-pa-deploy-form]").forEach(startDeploySelection);
    document.querySelectorAll("[data-pa-deploy-form]").forEach(startPauseChoice);
    document.querySelectorAll("[data-pa-coordination]").forEach(startCoordination);
  });
})();
