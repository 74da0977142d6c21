/* The article page's state, in one object: what the server rendered into #comments' data
   attributes, the elements every part works on, and what changes as the page lives. */

import { toInt } from "../lib/util.js";

export const state = {
  root: null,
  thread: null,
  template: null,
  slug: "",
  liveUrl: "",
  apiUrl: "",
  lastSeq: 0,
  epoch: "",
  count: 0,
  isMod: false,        // a moderator's page: removed text stays, moderation tools show
  threadState: "open", // open, closed (no composer, no Reply) or hidden (readers see none of it)
  me: "",              // the moderator's name
  socket: null,        // the ReconnectingSocket
  connState: "connecting",
  readers: null,
  posts: new Map(),    // ref -> {ref, form, payload, timer, sent, viaHttp, done}
  focusOnArrival: null, // id of our own post, acked before its event arrived
  sort: "newest",      // the top level's order (the replies': oldest first)
  target: "",          // a permalink's comment: the page shows its conversation only
  paged: false,        // a later page of the top level (?after=), reached without JavaScript
  loadMore: null,      // the "Load more comments" link
};

export function initState() {
  const root = document.getElementById("comments");
  const thread = document.getElementById("thread");
  const template = document.getElementById("comment-template");
  if (!root || !thread || !template || !("content" in template)) return false;
  const slug = root.dataset.slug || "";
  Object.assign(state, {
    root,
    thread,
    template,
    slug,
    liveUrl: root.dataset.liveUrl || "",
    apiUrl: root.dataset.apiUrl || "/api/articles/" + encodeURIComponent(slug) + "/comments",
    lastSeq: toInt(root.dataset.seq, 0),
    epoch: root.dataset.epoch || "",
    count: toInt(root.dataset.count, thread.querySelectorAll('.comment[data-status="visible"]').length),
    isMod: root.dataset.moderator === "1",
    threadState: root.dataset.threadState || "open",
    me: root.dataset.moderatorName || "",
    sort: root.dataset.sort || "newest",
    target: root.dataset.target || "",
    paged: new URLSearchParams(location.search).has("after"),
    loadMore: root.querySelector("[data-load-more]"),
  });
  return true;
}
