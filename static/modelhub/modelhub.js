// ModelHub's page behaviour: a few lines, no framework, nothing from a CDN.
(function () {
  "use strict";

  // The labels of the options chosen in the form's <select> (the deploy form's servers).
  function selectedLabels(form) {
    var select = form.querySelector("select");
    if (!select) return [];
    return Array.prototype.map.call(select.selectedOptions, function (o) { return o.label.trim(); });
  }

  // <form data-confirm="Deploy v3 to gpu-1?">: ask before a state-changing POST.
  // "{selected}" in the question names what the form's select has chosen, so the person
  // confirms the servers they picked; with none chosen the server would refuse, so say so
  // here and do not send.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (!question) return;
    if (question.indexOf("{selected}") !== -1) {
      var chosen = selectedLabels(form);
      if (!chosen.length) {
        event.preventDefault();
        window.alert("No server chosen: choose at least one server.");
        return;
      }
      question = question.split("{selected}").join(chosen.join(", "));
    }
    if (!window.confirm(question)) event.preventDefault();
  }, true);

  // <div data-refresh-url="…" data-refresh-every="2">: poll an HTML fragment and swap it
  // in, until the fragment carries data-final (a deploy that ended, loaded or failed).
  function poll(el) {
    var url = el.getAttribute("data-refresh-url");
    var every = parseFloat(el.getAttribute("data-refresh-every") || "3") * 1000;
    function tick() {
      fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(new Error(r.status + " " + r.statusText)); })
        .then(function (html) {
          el.innerHTML = html;
          el.removeAttribute("data-refresh-error");
          if (!el.querySelector("[data-final]")) setTimeout(tick, every);
        })
        .catch(function (err) {
          // Say so rather than freeze on stale content; keep trying.
          el.setAttribute("data-refresh-error", String(err));
          setTimeout(tick, every * 2);
        });
    }
    if (!el.querySelector("[data-final]")) setTimeout(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh-url]").forEach(poll);
  });
})();
