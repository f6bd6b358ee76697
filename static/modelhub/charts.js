// Charts: fetch each .chart's figure (JSON from the chart-data view) and draw it with
// Plotly, loaded lazily, and only on pages that have a chart. After drawing, the chart
// carries data-drawn="1" and data-points="<points sent>" (the browser tests read them).
(function () {
  "use strict";

  var plotlyLoading = null;

  function loadPlotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotlyLoading) {
      var src = document.getElementById("charts-js").getAttribute("data-plotly");
      plotlyLoading = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = src;
        script.onload = function () { resolve(window.Plotly); };
        script.onerror = function () { reject(new Error("could not load " + src)); };
        document.head.appendChild(script);
      });
    }
    return plotlyLoading;
  }

  // Controls elsewhere on the page that add a query parameter to one chart (their name and
  // value), e.g. <select name="feature" data-chart-for="<the chart's id>">: a change re-queries it.
  function paramControls(el) {
    return document.querySelectorAll('[data-chart-for="' + el.id + '"][name]');
  }

  // The query of a chart's current range: a preset (range=24h) or custom start and end (UTC).
  function query(el, custom) {
    var q = new URLSearchParams({ target: el.getAttribute("data-target") });
    paramControls(el).forEach(function (control) {
      if (control.value) q.set(control.name, control.value);
    });
    if (custom) {
      q.set("start", custom.start);
      q.set("end", custom.end);
    } else {
      q.set("range", el.getAttribute("data-range"));
    }
    return el.getAttribute("data-url") + "?" + q.toString();
  }

  function showMessage(el, text, css) {
    if (window.Plotly) window.Plotly.purge(el);
    el.innerHTML = "";
    var p = document.createElement("p");
    p.className = css;
    p.textContent = text;
    el.appendChild(p);
  }

  function finish(el, points) {
    el.setAttribute("data-points", String(points));
    el.setAttribute("data-drawn", "1");
    el.removeAttribute("aria-busy");
  }

  function draw(el, custom) {
    // Only the latest request of a chart draws: a slow 30 d answer must not replace a newer 1 h one.
    var request = (el.chartRequest || 0) + 1;
    el.chartRequest = request;
    el.chartCustom = custom;  // what a parameter control re-queries with
    function current() { return el.chartRequest === request; }
    el.setAttribute("aria-busy", "true");
    el.removeAttribute("data-drawn");
    el.removeAttribute("data-error");
    fetch(query(el, custom), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.redirected) throw new Error("signed out: reload the page to sign in again");
        return response.json().catch(function () {
          throw new Error(response.status + " " + response.statusText);
        }).then(function (body) {
          if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
          return body;
        });
      })
      .then(function (figure) {
        if (!current()) return;
        if (figure.empty) {
          showMessage(el, figure.empty, "chart-empty");
          finish(el, 0);
          return;
        }
        return loadPlotly().then(function (Plotly) {
          var message = el.querySelector(":scope > p");  // an earlier empty reason or error
          if (message) message.remove();
          return Plotly.react(el, figure.data, figure.layout, { responsive: true, displaylogo: false });
        }).then(function () { finish(el, figure.points); });
      })
      .catch(function (err) {
        if (!current()) return;
        showMessage(el, String(err.message || err), "chart-empty error-box");
        el.setAttribute("data-error", String(err.message || err));
        finish(el, 0);
      });
  }

  function pressed(block, range) {
    block.querySelectorAll("button[data-range]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.getAttribute("data-range") === range));
    });
  }

  function wire(el) {
    paramControls(el).forEach(function (control) {
      control.addEventListener("change", function () { draw(el, el.chartCustom || null); });
    });
    var block = el.closest("[data-chart-block]");
    if (!block) return draw(el, null);
    block.querySelectorAll("button[type=button][data-range]").forEach(function (button) {
      button.addEventListener("click", function () {
        el.setAttribute("data-range", button.getAttribute("data-range"));
        pressed(block, el.getAttribute("data-range"));
        draw(el, null);
      });
    });
    var form = block.querySelector("[data-chart-custom]");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        // datetime-local is the browser's local time; the server takes UTC instants.
        var start = new Date(form.elements.start.value), end = new Date(form.elements.end.value);
        if (isNaN(start) || isNaN(end)) return;
        el.setAttribute("data-range", "custom");
        pressed(block, "custom");
        draw(el, { start: start.toISOString(), end: end.toISOString() });
      });
    }
    draw(el, null);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".chart[data-url]").forEach(wire);
  });
})();
