// Runs in <head>, before the page is drawn (not deferred, and small): puts the theme on <html
// data-theme>, the one remembered from the header's toggle or else the system's preference, so a
// page never flashes in the wrong theme. data-js says scripts run (the CSS shows the toggles then).
// The toggle itself is in app.js.
(function () {
  "use strict";
  const root = document.documentElement;
  let theme = null;
  try {
    theme = window.localStorage.getItem("gpucloud-theme");
  } catch (error) {
    // Storage refused (privacy settings): follow the system.
  }
  if (theme !== "dark" && theme !== "light") {
    theme = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  root.dataset.theme = theme;
  root.dataset.js = "";
})();
