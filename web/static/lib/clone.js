/* Elements cloned from a server-rendered <template>: the Jinja macro that renders every comment
   (and every desk card) renders it once more for a blank id "", so each per-item id token ends
   in "-"; a clone gets the real id appended. */

const ID_ATTRS = ["id", "for", "aria-labelledby", "aria-describedby", "aria-controls"];

// rename(token) may change a blank token before the id is appended (the desk's "card-" prefix).
export function fixIds(el, id, rename = (token) => token) {
  for (const node of [el, ...el.querySelectorAll("*")]) {
    for (const attr of ID_ATTRS) {
      const value = node.getAttribute(attr);
      if (!value) continue;
      node.setAttribute(attr, value.split(/\s+/).map((t) => (t.endsWith("-") ? rename(t) + id : t)).join(" "));
    }
  }
}

export function cloneFrom(template, selector, id, rename) {
  const el = template.content.querySelector(selector).cloneNode(true);
  fixIds(el, id, rename);
  return el;
}
