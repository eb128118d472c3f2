// A small Markdown renderer for model answers that builds DOM nodes only (createElement and text
// nodes; it never parses HTML): raw HTML in the answer stays literal text, links may only point to
// http:, https: or mailto: and open with rel="noopener noreferrer", images become links (the page
// loads nothing the model names). It covers what small models write: paragraphs, line breaks,
// headings, **bold**, *italic*, `code`, fenced code blocks, lists (nested), blockquotes, links,
// bare URLs, horizontal rules. It is re-run on the whole text at every streamed token, so an
// unclosed fence renders as a code block until it closes.
"use strict";

const AICoreMarkdown = (() => {
  const MAX_DEPTH = 6;  // nesting beyond this (">>>>>>>", lists in lists in ...) stays plain text
  const LINK_SCHEMES = new Set(["http:", "https:", "mailto:"]);
  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE = /^ {0,3}> ?(.*)$/;
  const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])(?:[ \t]+(.*)|[ \t]*)$/;
  const BLANK = /^\s*$/;

  function el(tag, ...children) {
    const node = document.createElement(tag);
    for (const child of children) node.append(child);
    return node;
  }

  // The href if it is an absolute http(s)/mailto URL, else null. The URL parser sees what the
  // browser would (tabs, newlines, odd case in "JaVaScRiPt:" included), and the href set is the
  // one checked.
  function safeHref(raw) {
    try {
      const url = new URL(raw.trim());
      return LINK_SCHEMES.has(url.protocol) ? url.href : null;
    } catch {
      return null;
    }
  }

  function link(href, ...children) {
    const a = el("a", ...children);
    a.href = href;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    return a;
  }

  // ---- inline: code spans, escapes, links, bare URLs, emphasis; everything else is text ----

  const PUNCTUATION = /[!-/:-@[-`{-~]/;
  // Sticky patterns (flag y) match at lastIndex: no copy of the rest of the text at each character.
  const URL_RUN = /(?:https?:\/\/|mailto:)[^\s<>"`]+/iy;
  const MARKER_RUN = /`+|\*+|_+/y;

  function runAt(pattern, s, at) {
    pattern.lastIndex = at;
    const match = pattern.exec(s);
    return match ? match[0] : null;
  }

  // [text](url "title") starting at `at` (the "["): {text, url, end} or null.
  function linkAt(s, at) {
    let depth = 0, i = at;
    for (; i < s.length && i - at < 500; i++) {  // bounded: each "[" of a long run scans no further
      if (s[i] === "\\") { i++; continue; }
      if (s[i] === "[") depth++;
      else if (s[i] === "]" && --depth === 0) break;
    }
    if (i >= s.length || s[i + 1] !== "(") return null;
    const text = s.slice(at + 1, i);
    let j = i + 2, parens = 0;
    for (; j < s.length; j++) {
      if (s[j] === "(") parens++;
      else if (s[j] === ")" && parens-- === 0) break;
    }
    if (j >= s.length) return null;
    let target = s.slice(i + 2, j).trim().replace(/\s+("[^"]*"|'[^']*')$/, "");
    if (target.startsWith("<") && target.endsWith(">")) target = target.slice(1, -1);
    return { text, url: target, end: j + 1 };
  }

  // A bare URL without the trailing punctuation that ends its sentence (and an unmatched ")").
  function bareUrlAt(s, at) {
    const run = runAt(URL_RUN, s, at);
    if (!run) return null;
    let url = run.replace(/[.,:;!?'*_~]+$/, "");
    while (url.endsWith(")") && url.split("(").length < url.split(")").length) url = url.slice(0, -1);
    return url.length > url.indexOf(":") + 3 ? url : null;
  }

  // The closing run of `marker` (exactly that long) for an emphasis opened before `from`: not
  // preceded by whitespace, and for "_" not inside a word (snake_case_names stay text). Whether a
  // run closes does not depend on the opener, so once none is found after `from`, none is after any
  // later point either (`misses` remembers: many unmatched "*" cost one scan, not one each).
  function closerOf(s, marker, from, misses) {
    if (from >= (misses.get(marker) ?? Infinity)) return -1;
    for (let i = s.indexOf(marker, from); i !== -1; i = s.indexOf(marker, i + 1)) {
      let end = i;
      while (s[end] === marker[0]) end++;
      if (end - i === marker.length && !/\s/.test(s[i - 1]) && !(marker[0] === "_" && /\w/.test(s[end] || ""))) {
        return i;
      }
      i = end - 1;
    }
    misses.set(marker, Math.min(from, misses.get(marker) ?? Infinity));
    return -1;
  }

  function inline(s, depth = 0, inLink = false) {
    const out = [];
    let text = "";
    const flush = () => { if (text) out.push(text); text = ""; };
    const emit = (node) => { flush(); out.push(node); };
    const misses = new Map();  // closers and code-span ends known to be absent (see closerOf)
    if (depth > MAX_DEPTH) return [s];
    for (let i = 0; i < s.length;) {
      const c = s[i];
      if (c === "\\" && PUNCTUATION.test(s[i + 1] || "")) { text += s[i + 1]; i += 2; continue; }
      if (c === "`") {
        const run = runAt(MARKER_RUN, s, i);
        const close = i + run.length >= (misses.get(run) ?? Infinity) ? -1 : s.indexOf(run, i + run.length);
        if (close === -1) misses.set(run, Math.min(i + run.length, misses.get(run) ?? Infinity));
        if (close !== -1 && s[close + run.length] !== "`") {
          let code = s.slice(i + run.length, close).replace(/\n/g, " ");
          if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
          emit(el("code", code));
          i = close + run.length;
        } else { text += run; i += run.length; }
        continue;
      }
      if (!inLink && (c === "[" || (c === "!" && s[i + 1] === "["))) {
        const image = c === "!";
        const found = linkAt(s, image ? i + 1 : i);
        const href = found && safeHref(found.url);
        if (href) {
          // an image is shown as a link to it: the page loads nothing the model names
          const label = image ? [found.text || found.url] : inline(found.text, depth + 1, true);
          emit(link(href, ...label));
          i = found.end;
          continue;
        }
      }
      if (!inLink && (c === "h" || c === "H" || c === "m" || c === "M") && !/\w/.test(s[i - 1] || "")) {
        const url = bareUrlAt(s, i);
        const href = url && safeHref(url);
        if (href) { emit(link(href, url)); i += url.length; continue; }
      }
      if (c === "<") {  // <https://...> autolinks; any other "<" is a literal character
        const url = inLink ? null : runAt(URL_RUN, s, i + 1);
        const href = url && s[i + 1 + url.length] === ">" && safeHref(url);
        if (href) { emit(link(href, url)); i += url.length + 2; continue; }
      }
      if (c === "*" || c === "_") {
        const run = runAt(MARKER_RUN, s, i);
        const size = Math.min(run.length, 3);
        const marker = c.repeat(size);
        const opens = s[i + run.length] && !/\s/.test(s[i + run.length]) &&
                      !(c === "_" && /\w/.test(s[i - 1] || ""));
        const close = opens && run.length <= 3 ? closerOf(s, marker, i + size + 1, misses) : -1;
        if (close !== -1) {
          const inner = inline(s.slice(i + size, close), depth + 1, inLink);
          const node = size === 1 ? el("em", ...inner)
            : size === 2 ? el("strong", ...inner) : el("strong", el("em", ...inner));
          emit(node);
          i = close + size;
        } else { text += run; i += run.length; }
        continue;
      }
      if (c === "\n") {  // a line break inside a paragraph is shown as one (chat, not prose)
        emit(el("br"));
        i++;
        continue;
      }
      text += c;
      i++;
    }
    flush();
    return out;
  }

  // ---- blocks: fences, headings, rules, quotes, lists, paragraphs ----

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
  }

  function indentOf(line) {
    return /^[ \t]*/.exec(line)[0].replace(/\t/g, "    ").length;
  }

  function dedent(line, width) {
    let i = 0, seen = 0;
    while (i < line.length && seen < width && (line[i] === " " || line[i] === "\t")) {
      seen += line[i] === "\t" ? 4 : 1;
      i++;
    }
    return line.slice(i);
  }

  function fence(lines, i, open) {
    const body = [];
    let j = i + 1;
    const closes = new RegExp("^ {0,3}" + (open[1][0] === "`" ? "`" : "~") + "{" + open[1].length + ",}\\s*$");
    for (; j < lines.length && !closes.test(lines[j]); j++) body.push(lines[j]);
    const code = el("code", body.join("\n"));
    if (open[2]) code.dataset.language = open[2];
    return { node: el("pre", code), next: j + 1 };
  }

  function list(lines, i, depth) {
    const first = ITEM.exec(lines[i]);
    const ordered = /\d/.test(first[2]);
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    let item = null;
    const items = [];
    for (; i < lines.length; i++) {
      const line = lines[i];
      const marker = ITEM.exec(line);
      if (marker && /\d/.test(marker[2]) === ordered && (!item || indentOf(line) < Math.min(2, item.width))) {
        item = { lines: [marker[3] || ""], width: marker[1].length + marker[2].length + 1 };
        items.push(item);
      } else if (BLANK.test(line)) {
        let k = i + 1;
        while (k < lines.length && BLANK.test(lines[k])) k++;
        const after = lines[k] === undefined ? null : ITEM.exec(lines[k]);
        const continues = k < lines.length &&
          ((after && /\d/.test(after[2]) === ordered) || indentOf(lines[k]) >= 2);
        if (!continues) break;
        item.lines.push("");
      } else if (indentOf(line) >= 2) {
        item.lines.push(dedent(line, Math.max(2, Math.min(item.width, indentOf(line)))));
      } else if (!startsBlock(line) && !BLANK.test(item.lines[item.lines.length - 1])) {
        item.lines.push(line);  // a lazy continuation of the item's paragraph
      } else break;
    }
    for (const it of items) {
      const [head, ...rest] = blocks(it.lines, depth + 1);
      // an item's first paragraph is its text, <li>text</li>, not <li><p>text</p></li>
      node.append(el("li", ...(head && head.tagName === "P" ? head.childNodes : head ? [head] : []), ...rest));
    }
    return { node, next: i };
  }

  function blocks(lines, depth = 0) {
    const out = [];
    if (depth > MAX_DEPTH) return lines.some((l) => !BLANK.test(l)) ? [el("p", lines.join("\n"))] : [];
    for (let i = 0; i < lines.length;) {
      const line = lines[i];
      let match;
      if (BLANK.test(line)) { i++; continue; }
      if ((match = FENCE.exec(line))) {
        const { node, next } = fence(lines, i, match);
        out.push(node);
        i = next;
      } else if ((match = HEADING.exec(line))) {
        out.push(el("h" + match[1].length, ...inline(match[2] || "", depth)));
        i++;
      } else if (RULE.test(line)) {
        out.push(el("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const quoted = [];
        for (; i < lines.length && (match = QUOTE.exec(lines[i])); i++) quoted.push(match[1]);
        out.push(el("blockquote", ...blocks(quoted, depth + 1)));
      } else if (ITEM.test(line)) {
        const { node, next } = list(lines, i, depth);
        out.push(node);
        i = next;
      } else {
        const para = [line.trim()];
        for (i++; i < lines.length && !BLANK.test(lines[i]) && !startsBlock(lines[i]); i++) para.push(lines[i].trim());
        out.push(el("p", ...inline(para.join("\n"), depth)));
      }
    }
    return out;
  }

  // The answer's Markdown as a fragment of DOM nodes.
  function render(markdown) {
    const fragment = document.createDocumentFragment();
    fragment.append(...blocks(String(markdown).replace(/\r\n?/g, "\n").split("\n")));
    return fragment;
  }

  // Every tag this renderer makes (a test checks that an answer holds nothing else).
  const TAGS = ["p", "br", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "code", "pre", "ul", "ol",
                "li", "blockquote", "a", "hr"];

  return { render, TAGS };
})();
