// tapwatch console: the little interaction that plain HTML forms cannot do.
// Every page works without it; it only adds select-all, a selection count and confirmations.
(function () {
  "use strict";
  function updateCount(form) {
    var n = form.querySelectorAll('input[name="ids"]:checked').length;
    form.querySelectorAll("[data-selected-count]").forEach(function (el) { el.textContent = n; });
  }
  document.addEventListener("change", function (ev) {
    var t = ev.target;
    if (t.matches && t.matches("[data-select-all]")) {
      var form = t.closest("form");
      form.querySelectorAll('input[name="ids"]').forEach(function (box) { box.checked = t.checked; });
      updateCount(form);
    } else if (t.name === "ids" && t.form) {
      updateCount(t.form);
    }
  });
  // data-confirm on a form, or on the button that submits it
  document.addEventListener("submit", function (ev) {
    var button = ev.submitter;
    var text = (button && button.getAttribute("data-confirm")) || ev.target.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { ev.preventDefault(); }
  });
})();
