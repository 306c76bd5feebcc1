// One environment's whole output, followed live: ask for what follows the offset last given
// (at most 256 KiB per answer) until the run has ended. Text only (textContent): the
// output of a hostile machine is never HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const RETRY_MS = 5000;

  function start(root) {
    const url = root.dataset.liveUrl;
    const text = root.querySelector("[data-pa-output-text]");
    const state = root.querySelector("[data-pa-output-state]");
    const size = root.querySelector("[data-pa-output-size]");
    const follow = root.querySelector("[data-pa-output-follow]");
    let offset = 0;

    async function poll() {
      let delay = POLL_MS;
      try {
        const response = await fetch(url + "?offset=" + offset, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
          cache: "no-store",
        });
        if (response.status === 401 || response.status === 403 || response.redirected) {
          throw new Error("signed out: reload the page");
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        const piece = await response.json();
        if (piece.text) {
          text.append(document.createTextNode(piece.text));
          if (follow.checked) text.scrollTop = text.scrollHeight;
        }
        const more = piece.next_offset > offset;
        offset = piece.next_offset;
        size.textContent = piece.length + " bytes" + (piece.dropped_bytes ? " (" + piece.dropped_bytes + " dropped)" : "");
        if (piece.complete && !more) {
          state.textContent = "Finished";
          root.dataset.finished = "true";
          return;
        }
        state.textContent = "Live: follows the script as it runs";
        if (more) delay = 0;
      } catch (error) {
        state.textContent = "Not updating (" + error.message + "); retrying";
        delay = RETRY_MS;
      }
      window.setTimeout(poll, delay);
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    const root = document.querySelector("[data-pa-output]");
    if (root) start(root);
  });
})();
