/* Backchannel comment counts for article lists, like Disqus' count.js.
 *
 *   <script src="https://comments.example.com/static/counts.js" async></script>
 *   <span data-backchannel-count="my-article-slug">–</span>
 *
 * Fills every such span with the article's number of visible comments (formatted for the
 * page's lang), asking GET /api/counts on the server this script was loaded from, 100 slugs
 * per request. The page's origin must be in the server's ALLOWED_ORIGINS (CORS); under a
 * Content-Security-Policy the page allows that server in script-src and connect-src. No
 * dependencies, nothing inline, no cookies sent. A span that cannot be filled keeps its text.
 * window.backchannelCounts() fills spans added later.
 */
(function () {
  "use strict";
  var BATCH = 100;
  var script = document.currentScript;
  var server = new URL(script ? script.src : "/", location.href).origin;

  function fill() {
    var spansBySlug = new Map();
    document.querySelectorAll("[data-backchannel-count]").forEach(function (span) {
      var slug = span.getAttribute("data-backchannel-count");
      if (!slug) return;
      if (!spansBySlug.has(slug)) spansBySlug.set(slug, []);
      spansBySlug.get(slug).push(span);
    });
    var slugs = Array.from(spansBySlug.keys());
    var format = new Intl.NumberFormat(document.documentElement.lang || undefined);
    for (var i = 0; i < slugs.length; i += BATCH) {
      var batch = slugs.slice(i, i + BATCH);
      fetch(server + "/api/counts?slugs=" + batch.map(encodeURIComponent).join(","),
            {credentials: "omit", mode: "cors"})
        .then(function (response) {
          if (!response.ok) throw new Error("backchannel counts: HTTP " + response.status);
          return response.json();
        })
        .then(function (answer) {  // {"slug": N, …}
          Object.keys(answer).forEach(function (slug) {
            (spansBySlug.get(slug) || []).forEach(function (span) {
              span.textContent = format.format(answer[slug]);
              span.setAttribute("data-backchannel-count-value", String(answer[slug]));
            });
          });
        })
        .catch(function (error) { console.warn(error); });
    }
  }

  window.backchannelCounts = fill;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fill);
  else fill();
})();
