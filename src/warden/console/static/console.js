// Keyboard shortcuts for fast reviewers. The console works without this file.
(function () {
  "use strict";

  function typing(target) {
    var tag = target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-queue] [data-row]"));
  }

  var selected = -1;

  function select(index) {
    var all = rows();
    if (!all.length) return;
    selected = Math.max(0, Math.min(all.length - 1, index));
    all.forEach(function (row, i) { row.classList.toggle("selected", i === selected); });
    var link = all[selected].querySelector("[data-row-link]");
    if (link) link.focus();
  }

  function focusAction(key) {
    var el = document.querySelector('[data-focus="' + key + '"]');
    if (!el) return false;
    if (key === "c" || key === "x") {
      el.click();
    } else {
      el.scrollIntoView({ block: "center" });
      el.focus();
    }
    return true;
  }

  function toggleHelp() {
    var help = document.getElementById("shortcuts");
    var button = document.querySelector("[data-help-toggle]");
    if (!help || !button) return;
    help.hidden = !help.hidden;
    button.setAttribute("aria-expanded", String(!help.hidden));
    if (!help.hidden) {
      help.tabIndex = -1;
      help.focus({ preventScroll: true }); // it is fixed in view; the page stays where it was
    }
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-help-toggle]")) toggleHelp();
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var key = event.key;
    var handled = true;
    if (key === "j") select(selected + 1);
    else if (key === "k") select(selected - 1);
    else if (key === "?") toggleHelp();
    else if (key === "n") {
      var form = document.querySelector("[data-claim-next]");
      if (form) form.submit(); else handled = false;
    } else if (key === "q") window.location.href = "/console/queue";
    else if (key === "/") {
      var search = document.querySelector("[data-search]");
      if (search) search.focus(); else window.location.href = "/console/decisions";
    } else if ("caorx".indexOf(key) >= 0) handled = focusAction(key);
    else handled = false;
    if (handled) event.preventDefault();
  });
})();
