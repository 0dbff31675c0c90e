// The dashboard's only script: the copy button, confirmations, and keeping a
// just-created key out of the browser history.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent.trim();
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 2000); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done);
  } else {
    // Plain http (a gateway on a LAN address) has no clipboard API: select the key instead.
    const range = document.createRange();
    range.selectNodeContents(document.getElementById(button.dataset.copy));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (document.execCommand("copy")) done();
  }
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

document.addEventListener("DOMContentLoaded", () => {
  // The page showing a new key answers a POST. Pointing this history entry at the key
  // list means reload and back show the list, never the key or a form resubmission.
  const holder = document.querySelector("[data-replace-url]");
  if (holder) history.replaceState(null, "", holder.dataset.replaceUrl);
});

document.addEventListener("DOMContentLoaded", () => {
  // Slow panels (the overview's recommendations) come after the page, in place.
  for (const panel of document.querySelectorAll("[data-fragment]")) {
    fetch(panel.dataset.fragment, { credentials: "same-origin" })
      .then((response) => {
        if (!response.ok) throw new Error(response.status);
        return response.text();
      })
      .then((html) => { panel.innerHTML = html; panel.dataset.loaded = "true"; })
      .catch(() => {
        panel.querySelector("p").textContent = "The recommendations could not be loaded; reload the page to try again.";
      });
  }
});
