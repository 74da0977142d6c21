/* Relative times ("5 minutes ago"), in the page's language and in the same words as the
   server's (both from CLDR: Babel there, Intl here), with the exact time on hover. */

import { ago, fullDate } from "./i18n.js";

// The exact date and time, on hover, once.
function titleTime(el, iso) {
  if (el.title) return;
  const text = fullDate(iso);
  if (text) el.title = text;
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
