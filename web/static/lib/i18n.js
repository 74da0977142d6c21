/* The scripts' words, in the page's language: the same gettext catalogue as the pages
 * (web/locale/LANG/LC_MESSAGES/messages.po; `make messages` finds the _() and ngettext() calls
 * here), served per language as an ES module, /i18n/LANG.js, that exports {msgid: msgstr,
 * singular: [forms…]}. The page names its language in <html lang> and its module in
 * <html data-messages>; English, the source language, needs none.
 *
 *   _("Reported {n} times", { n: 3 })      a message, with {named} values filled in
 *   ngettext("{n} comment", "{n} comments", n, { n })
 *   pgettext("pre-moderation", "on")        a message whose words mean another thing elsewhere
 *   ago(iso)                                 "5 minutes ago", "il y a 5 minutes", or the date
 *   formatNumber(5000), formatList(names)    "5 000", "Ann, Ben et Cy"
 *
 * createTranslator(lang, messages) makes another set (an embed with its own data-lang).
 */

const WEEK = 7 * 86400;
const DAY = 86400;
const HOUR = 3600;
const MINUTE = 60;
const DATE_AFTER_DAYS = 30; // as the server's i18n.DATE_AFTER_DAYS

function fill(text, values) {
  if (!values) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

function maybe(make) {
  try { return make(); } catch (e) { return null; }
}

export function createTranslator(lang, messages) {
  const catalogue = messages || {};
  const plurals = maybe(() => new Intl.PluralRules(lang));
  const numbers = maybe(() => new Intl.NumberFormat(lang));
  const relative = maybe(() => new Intl.RelativeTimeFormat(lang, { numeric: "always" }));
  // The server's Babel format "medium": 2 Feb 2026, 2 févr. 2026, 02.02.2026.
  const dates = maybe(() => new Intl.DateTimeFormat(lang, { dateStyle: "medium" }));
  const full = maybe(() => new Intl.DateTimeFormat(lang, { dateStyle: "full", timeStyle: "short" }));
  const lists = maybe(() => new Intl.ListFormat(lang, { type: "conjunction" }));

  // Numbers in values are written the language's way (5,000 / 5 000 / 5.000).
  const localise = (values) => {
    if (!values || !numbers) return values;
    const out = {};
    for (const [key, value] of Object.entries(values)) out[key] = typeof value === "number" ? numbers.format(value) : value;
    return out;
  };

  function gettext(msgid, values) {
    const text = typeof catalogue[msgid] === "string" && catalogue[msgid] ? catalogue[msgid] : msgid;
    return fill(text, localise(values));
  }

  // The same words meaning different things ("on": a switch's state, or "on an article").
  function pgettext(context, msgid, values) {
    const text = catalogue[context + "\u0004" + msgid];
    return typeof text === "string" && text ? fill(text, localise(values)) : fill(msgid, localise(values));
  }

  // English, French and German have two forms: "one" (French: 0 and 1 too) and the rest.
  function ngettext(singular, plural, n, values) {
    const one = plurals ? plurals.select(n) === "one" : n === 1;
    const forms = catalogue[singular];
    const text = Array.isArray(forms) && forms.length === 2 ? forms[one ? 0 : 1] : one ? singular : plural;
    return fill(text, localise(values || { n }));
  }

  function ago(iso, now = Date.now()) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    const seconds = Math.max(0, (now - t) / 1000); // a client clock behind the server's: "just now"
    if (seconds >= DATE_AFTER_DAYS * DAY) return dates ? dates.format(new Date(t)) : new Date(t).toDateString();
    for (const [unit, size] of [["week", WEEK], ["day", DAY], ["hour", HOUR], ["minute", MINUTE]]) {
      if (seconds >= size) {
        const n = Math.floor(seconds / size);
        return relative ? relative.format(-n, unit) : n + " " + unit;
      }
    }
    return gettext("just now");
  }

  function fullDate(iso) {
    const t = Date.parse(iso);
    return Number.isNaN(t) || !full ? "" : full.format(new Date(t));
  }

  return {
    lang, gettext, ngettext, pgettext, ago, fullDate,
    number: (n) => (numbers ? numbers.format(n) : String(n)),
    list: (items) => (lists ? lists.format(items) : items.join(", ")), // "Ann, Ben and Cy"
  };
}

async function pageMessages() {
  const url = document.documentElement.dataset.messages;
  if (!url) return {};
  try {
    return (await import(url)).default;
  } catch (e) {
    return {}; // the words stay English; the page still works
  }
}

const page = createTranslator(document.documentElement.lang || "en", await pageMessages());

export const lang = page.lang;
export const _ = page.gettext;
export const ngettext = page.ngettext;
export const pgettext = page.pgettext;
export const ago = page.ago;
export const fullDate = page.fullDate;
export const formatNumber = page.number;
export const formatList = page.list;
