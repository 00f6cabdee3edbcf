// The dashboard's small behaviours: copy buttons, the phone menu and the theme toggle.
(function () {
  "use strict";

  const THEME_KEY = "gpucloud-theme"; // also read by theme.js, in <head>

  // Say something to screen readers without moving focus (base.html's aria-live region).
  function announce(text) {
    const region = document.getElementById("announcer");
    if (!region) return;
    region.textContent = "";
    // A fresh node each time, so that the same words twice are announced twice.
    window.setTimeout(function () { region.textContent = text; }, 50);
  }

  // --- Copy buttons: <button data-copy="#element-id"> copies that element's text. ---------------

  function selectText(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function flash(button, text, spoken) {
    const original = button.dataset.label || button.textContent;
    button.dataset.label = original;
    button.textContent = text;
    announce(spoken || text);
    window.clearTimeout(button._flashTimer);
    button._flashTimer = window.setTimeout(function () { button.textContent = original; }, 2000);
  }

  function copy(button) {
    const target = document.querySelector(button.dataset.copy);
    if (!target) return;
    const text = target.textContent.trim();

    // The Clipboard API needs a secure context (https or localhost); otherwise select the text
    // so that Ctrl+C / Cmd+C copies it.
    const manual = function () {
      selectText(target);
      flash(button, "Press Ctrl+C", "Selected. Press Control+C to copy.");
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { flash(button, "Copied", "Copied to the clipboard"); }, manual);
    } else {
      manual();
    }
  }

  // --- The menu button (phone widths): shows and hides the nav. --------------------------------

  function toggleMenu(button, open) {
    button.setAttribute("aria-expanded", open ? "true" : "false");
  }

  // --- The theme toggle: light or dark, remembered in localStorage. ----------------------------

  function currentTheme() {
    return document.documentElement.dataset.theme === "dark" ? "dark" : "light";
  }

  function showTheme() {
    const dark = currentTheme() === "dark";
    document.querySelectorAll("[data-theme-toggle]").forEach(function (button) {
      button.setAttribute("aria-pressed", dark ? "true" : "false");
    });
  }

  function setTheme(theme, remember) {
    document.documentElement.dataset.theme = theme;
    if (remember) {
      try {
        window.localStorage.setItem(THEME_KEY, theme);
      } catch (error) {
        // Not remembered: it still holds for this page.
      }
    }
    showTheme();
    document.dispatchEvent(new CustomEvent("gpucloud:themechange", { detail: { theme: theme } }));
  }

  showTheme();
  // Until the user chooses, follow the system's preference as it changes.
  if (window.matchMedia) {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function (event) {
      let chosen = null;
      try { chosen = window.localStorage.getItem(THEME_KEY); } catch (error) { /* none */ }
      if (!chosen) setTheme(event.matches ? "dark" : "light", false);
    });
  }

  document.addEventListener("click", function (event) {
    const copyButton = event.target.closest("[data-copy]");
    if (copyButton) return copy(copyButton);

    const menuButton = event.target.closest("[data-menu-toggle]");
    if (menuButton) return toggleMenu(menuButton, menuButton.getAttribute("aria-expanded") !== "true");

    const themeButton = event.target.closest("[data-theme-toggle]");
    if (themeButton) return setTheme(currentTheme() === "dark" ? "light" : "dark", true);
  });

  // Escape closes an open menu and gives the focus back to its button.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    const open = document.querySelector('[data-menu-toggle][aria-expanded="true"]');
    if (open) {
      toggleMenu(open, false);
      open.focus();
    }
  });
})();
