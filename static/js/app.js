// Copy buttons: <button data-copy="#element-id"> copies that element's text.
(function () {
  "use strict";

  function selectText(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function flash(button, text) {
    const original = button.dataset.label || button.textContent;
    button.dataset.label = original;
    button.textContent = text;
    window.setTimeout(function () { button.textContent = original; }, 2000);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const target = document.querySelector(button.dataset.copy);
    if (!target) return;
    const text = target.textContent.trim();

    // The Clipboard API needs a secure context (https or localhost); otherwise select the text
    // so that Ctrl+C / Cmd+C copies it.
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { flash(button, "Copied"); },
        function () { selectText(target); flash(button, "Press Ctrl+C"); }
      );
    } else {
      selectText(target);
      flash(button, "Press Ctrl+C");
    }
  });
})();
