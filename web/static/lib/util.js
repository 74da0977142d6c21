/* Small helpers shared by the article page (live.js) and the moderation desk (desk.js). */

export function toInt(value, fallback) {
  const n = parseInt(value, 10);
  return Number.isFinite(n) ? n : fallback;
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") || "" : "";
}

export function field(form, name) {
  const el = form.elements.namedItem(name);
  return el && "value" in el ? el : null;
}

export function newRef() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  (window.crypto || {}).getRandomValues ? crypto.getRandomValues(bytes) : bytes.forEach((_, i) => { bytes[i] = Math.random() * 256; });
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Web storage that may be missing (private mode, disabled storage, sandboxed frame) or full:
// neither is worth failing over.
function probe(kind) {
  try {
    const s = window[kind];
    s.setItem("backchannel.probe", "1");
    s.removeItem("backchannel.probe");
    return s;
  } catch (e) {
    return null;
  }
}

function wrap(store) {
  return {
    get(key) { try { return store ? store.getItem(key) : null; } catch (e) { return null; } },
    set(key, value) { try { if (store) store.setItem(key, value); } catch (e) { /* quota */ } },
    remove(key) { try { if (store) store.removeItem(key); } catch (e) { /* ignore */ } },
  };
}

export const local = wrap(probe("localStorage"));
export const session = wrap(probe("sessionStorage"));

// What a person sees as one character (a grapheme cluster: "é", "👍🏽", "🇫🇷"), as the server
// counts the 5,000-character limit.
const segmenter = (() => {
  try { return new Intl.Segmenter(undefined, { granularity: "grapheme" }); } catch (e) { return null; }
})();

export function graphemeCount(text) {
  if (!segmenter) return Array.from(text).length; // code points: never fewer than graphemes
  let n = 0;
  for (const _ of segmenter.segment(text)) n += 1;
  return n;
}

// Announces text to screen readers through a polite live region (cleared first so that the
// same sentence twice is announced twice).
export function say(region, text) {
  if (!region) return;
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

// A comment's permalink: the article page with that comment loaded, in view and highlighted.
export function permalink(slug, id) {
  return "/articles/" + encodeURIComponent(slug) + "/comments/" + encodeURIComponent(id) + "#c-" + encodeURIComponent(id);
}
