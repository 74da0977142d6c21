/* The thread a page at a time (server/paging.py): "Load more comments" and "N more replies"
 * load in place from the API instead of following their links; the reader's sort is
 * remembered; a permalinked comment is brought into view; "Copy link" copies a comment's
 * permalink. Live comments follow the paging rules in thread.js (placeComment).
 */

import { state } from "./state.js";
import { local, permalink, say, toInt } from "../lib/util.js";
import { _ } from "../lib/i18n.js";
import { appendLoaded, commentEl, focusComment, setMoreReplies } from "./thread.js";

const KEY_SORT = "backchannel.sort";
const TOP_PAGE = 30; // as the server's first screenful (pages.TOP_PAGE)
const REPLIES_PAGE = 50;

async function fetchPage(params) {
  const query = new URLSearchParams(params);
  const res = await fetch(state.apiUrl + "?" + query.toString(), { headers: { Accept: "application/json" } });
  if (!res.ok) throw new Error("HTTP " + res.status);
  return res.json();
}

// A link that loads in place: busy while it does, and said aloud when it fails (the link
// still works as a link: a second click without JavaScript's help is a reload away).
async function loading(link, load) {
  if (link.getAttribute("aria-busy") === "true") return;
  link.setAttribute("aria-busy", "true");
  try {
    await load();
  } catch (e) {
    say(document.getElementById("live-announcer"), _("The comments could not be loaded. Please try again."));
  } finally {
    link.removeAttribute("aria-busy");
  }
}

function loadMoreComments(link) {
  return loading(link, async () => {
    const page = await fetchPage({ sort: state.sort, after: link.dataset.after || "", limit: String(TOP_PAGE) });
    appendLoaded(state.thread, page.comments);
    link.dataset.after = page.next || "";
    link.setAttribute("href", "/articles/" + encodeURIComponent(state.slug) + "?sort=" + state.sort + "&after=" + encodeURIComponent(page.next || "") + "#comments");
    link.hidden = !page.next;
  });
}

function loadMoreReplies(link) {
  const li = link.closest("li.comment");
  if (!li) return Promise.resolve();
  return loading(link, async () => {
    const params = { parent: li.dataset.id, limit: String(REPLIES_PAGE) };
    if (link.dataset.after) params.after = link.dataset.after;
    const page = await fetchPage(params);
    const added = appendLoaded(li.querySelector(":scope > ol.replies"), page.comments);
    setMoreReplies(li, page.next ? Math.max(0, toInt(link.dataset.count, 0) - added) : 0, page.next);
  });
}

function onClick(event) {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest("a[data-load-more], a.more-replies, button.copy-link, [data-thread-sort] a[data-sort]");
  if (!link || !state.root.contains(link)) return;
  if (link.matches("[data-sort]")) {
    local.set(KEY_SORT, link.dataset.sort); // remembered; the link itself loads the page in that order
    return;
  }
  event.preventDefault();
  if (link.matches("button.copy-link")) copyLink(link);
  else if (link.matches("[data-load-more]")) loadMoreComments(link);
  else loadMoreReplies(link);
}

async function copyLink(button) {
  const li = button.closest("li.comment");
  if (!li) return;
  const url = new URL(permalink(state.slug, li.dataset.id), location.href).href;
  try {
    await navigator.clipboard.writeText(url);
    say(document.getElementById("live-announcer"), _("Link copied"));
    const label = button.textContent;
    button.textContent = _("Link copied");
    setTimeout(() => { button.textContent = label; }, 2000);
  } catch (e) {
    window.prompt(_("Copy this link:"), url); // no clipboard (an insecure origin, a refusal)
  }
}

// Hidden without JavaScript: the comment's time is its link there.
function showCopyButtons(scope) {
  scope.querySelectorAll("button.copy-link").forEach((b) => { b.hidden = false; });
}

// The sort the reader chose last time, when this address names none (a shared ?sort= wins).
function rememberedSort() {
  const params = new URLSearchParams(location.search);
  const chosen = local.get(KEY_SORT);
  if (params.has("sort")) {
    local.set(KEY_SORT, params.get("sort"));
    return false;
  }
  if (!chosen || chosen === state.sort || state.target || params.has("after")) return false;
  const link = state.root.querySelector(`[data-thread-sort] a[data-sort="${CSS.escape(chosen)}"]`);
  if (!link) return false;
  location.replace(link.href);
  return true;
}

export function startPaging() {
  if (rememberedSort()) return;
  state.root.addEventListener("click", onClick);
  showCopyButtons(state.root);
  // The blank comment's button too, so comments built from it have one.
  showCopyButtons(state.template.content);
  const target = commentEl(state.target);
  if (target) focusComment(target);
}
