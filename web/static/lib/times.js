/* Relative times ("5 minutes ago"), in the same shape as the server's, with the exact time on hover. */

const dateFormat = (() => {
  // The same shape as the server's "2 Feb 2025", so server- and client-rendered times agree.
  try { return new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", year: "numeric" }); } catch (e) { return null; }
})();
const fullFormat = (() => {
  try { return new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" }); } catch (e) { return null; }
})();

function plural(n, one, many) {
  return n + " " + (n === 1 ? one : many);
}

function ago(iso, now) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const seconds = Math.max(0, (now - t) / 1000); // a client clock behind the server's: "just now"
  if (seconds < 60) return "just now";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return plural(minutes, "minute ago", "minutes ago");
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return plural(hours, "hour ago", "hours ago");
  const days = Math.floor(hours / 24);
  if (days < 30) return plural(days, "day ago", "days ago");
  return dateFormat ? dateFormat.format(new Date(t)) : new Date(t).toDateString();
}

// The exact date and time, on hover, once.
function titleTime(el, iso) {
  if (el.title || !fullFormat) return;
  const t = Date.parse(iso);
  if (!Number.isNaN(t)) el.title = fullFormat.format(new Date(t));
}

// Sets a <time>'s text from its datetime (or from `iso`, which replaces it).
export function setTime(el, iso) {
  if (iso !== undefined) {
    el.setAttribute("datetime", iso || "");
    el.removeAttribute("title");
  }
  const value = el.getAttribute("datetime");
  if (!value) { el.textContent = ""; return; }
  const text = ago(value, Date.now());
  if (el.textContent !== text) el.textContent = text;
  titleTime(el, value);
}
