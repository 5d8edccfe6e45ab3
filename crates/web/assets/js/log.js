// A task's log, live. The stream is the API's Server-Sent Events endpoint read with
// fetch (with the session, through apiFetch) and parsed here; a dropped
// connection resumes from the last event id with nothing lost or repeated.
//
// Keeping up with thousands of lines a second: lines are queued as they arrive and
// put on the page once per animation frame in one fragment; at most `window` lines
// are in the DOM (the newest), with "Show earlier" to widen it. All lines stay in
// memory (up to MAX_KEPT) for search and for "Show earlier".
import { apiFetch } from './auth.js';
import { appendAnsi } from './ansi.js';
import { h } from './ui.js';
import { t, fmtClock } from './i18n.js';

const WINDOW = 1000;
const MAX_KEPT = 500000;
const FRAME_BUDGET = 250;

export function logView(url, { onEnd } = {}) {
  const lines = [];
  let dropped = 0; // lines forgotten because MAX_KEPT was reached
  let pending = [];
  let rendered = 0; // lines (of `lines`) already on the page, counted from the end
  let windowSize = WINDOW;
  let follow = true;
  let filter = '';
  let ended = false;
  let aborted = false;
  let controller = null;
  let lastId = null;
  let frame = 0;

  const out = h('div', { class: 'log-lines', role: 'log', 'aria-live': 'off', tabindex: '0', 'aria-label': t('log.label') });
  const earlier = h('button', { type: 'button', class: 'link earlier', hidden: true, onclick: () => { windowSize += WINDOW; rerender(); } }, t('log.earlier'));
  const state = h('span', { class: 'log-state muted', 'aria-live': 'polite' }, t('log.connecting'));
  const followBox = h('input', { type: 'checkbox', checked: true, id: 'log-follow' });
  const search = h('input', { type: 'search', placeholder: t('log.search'), 'aria-label': t('log.search'), id: 'log-search' });
  const count = h('span', { class: 'muted match-count' });
  followBox.addEventListener('change', () => { follow = followBox.checked; if (follow) scrollEnd(); });
  let searchTimer = 0;
  search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { filter = search.value.toLowerCase(); rerender(); }, 150);
  });
  out.addEventListener('scroll', () => {
    const atEnd = out.scrollHeight - out.scrollTop - out.clientHeight < 30;
    if (!atEnd && follow && !programmatic) { follow = false; followBox.checked = false; }
  });
  let programmatic = false;

  const root = h('section', { class: 'log' },
    h('div', { class: 'log-tools' },
      h('label', { class: 'check' }, followBox, ' ', t('log.follow')), search, count, h('span', { class: 'spacer' }), state),
    earlier, out);

  function lineEl(raw) {
    // Stored lines: `2026-11-22T00:41:39.892Z out text`.
    const div = document.createElement('div');
    div.className = 'line';
    const m = /^(\d{4}-\d\d-\d\dT[\d:.]+Z) (out|err|sys) ?(.*)$/s.exec(raw);
    if (m) {
      const time = document.createElement('time');
      time.dateTime = m[1];
      time.textContent = localTime(m[1]);
      div.append(time);
      if (m[2] !== 'out') div.classList.add(m[2]);
      const text = document.createElement('span');
      text.className = 'text';
      appendAnsi(text, m[3]);
      div.append(text);
    } else {
      appendAnsi(div, raw);
    }
    if (filter) highlight(div.querySelector('.text') || div, filter);
    return div;
  }

  // Marks each match of the search in the line's text: the text nodes are split and the
  // matches wrapped in <mark>, so the log text stays text (never parsed as HTML). A
  // match across two colours of an ANSI line is not marked (the line is still shown).
  function highlight(el, needle) {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    const nodes = [];
    for (let n = walker.nextNode(); n; n = walker.nextNode()) nodes.push(n);
    for (const node of nodes) {
      const text = node.data;
      const lower = text.toLowerCase();
      // Lower-casing that changes the length would put the marks in the wrong place.
      if (lower.length !== text.length || !lower.includes(needle)) continue;
      const frag = document.createDocumentFragment();
      let at = 0;
      for (let i = lower.indexOf(needle); i >= 0; i = lower.indexOf(needle, at)) {
        if (i > at) frag.append(text.slice(at, i));
        const mark = document.createElement('mark');
        mark.textContent = text.slice(i, i + needle.length);
        frag.append(mark);
        at = i + needle.length;
      }
      if (at < text.length) frag.append(text.slice(at));
      node.replaceWith(frag);
    }
  }

  // Local HH:MM:SS.mmm; the zone conversion is done once per second of log, not per line.
  let lastSecond = '';
  let lastLocal = '';
  function localTime(iso) {
    const second = iso.slice(0, 19);
    if (second !== lastSecond) {
      const d = new Date(second + 'Z');
      lastSecond = second;
      lastLocal = isNaN(d) ? second : fmtClock(d);
    }
    const dot = iso.indexOf('.', 19);
    return lastLocal + (dot > 0 ? iso.slice(dot, dot + 4) : '');
  }

  const matches = (raw) => !filter || raw.toLowerCase().includes(filter);

  function scrollEnd() {
    programmatic = true;
    out.scrollTop = out.scrollHeight;
    requestAnimationFrame(() => { programmatic = false; });
  }

  function rerender() {
    pending = [];
    const shown = filter ? lines.filter(matches) : lines;
    const start = Math.max(0, shown.length - windowSize);
    const frag = document.createDocumentFragment();
    for (let i = start; i < shown.length; i++) frag.append(lineEl(shown[i]));
    out.replaceChildren(frag);
    rendered = lines.length;
    earlier.hidden = start === 0;
    count.textContent = filter ? t('log.matching', { n: shown.length }) : '';
    root.dataset.rendered = String(rendered + dropped);
    if (follow) scrollEnd();
  }

  function flush() {
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    root.dataset.received = String(received);
    // Lines older than the newest `windowSize` would be removed at once: skip them
    // (they stay in `lines` for "Show earlier" and search).
    const skipped = Math.max(0, pending.length - windowSize);
    // At most FRAME_BUDGET new lines per frame, so no frame blocks the page; the rest
    // go in the next frames.
    const take = Math.min(pending.length - skipped, FRAME_BUDGET);
    const batch = pending.slice(skipped, skipped + take);
    pending = pending.slice(skipped + take);
    if (pending.length) frame = requestAnimationFrame(flush);
    const from = skipped;
    const frag = document.createDocumentFragment();
    let added = 0;
    for (let i = 0; i < batch.length; i++) {
      if (matches(batch[i])) { frag.append(lineEl(batch[i])); added++; }
    }
    out.append(frag);
    const excess = out.childElementCount - windowSize;
    if (excess > 0) {
      // One range deletion instead of `excess` removals.
      const range = document.createRange();
      range.setStartBefore(out.firstChild);
      range.setEndAfter(out.children[excess - 1]);
      range.deleteContents();
    }
    if (from > 0 || out.childElementCount >= windowSize) earlier.hidden = false;
    rendered = lines.length - pending.length;
    root.dataset.rendered = String(rendered + dropped);
    if (filter) count.textContent = t('log.matching_shown', { n: out.childElementCount });
    if (follow && added) scrollEnd();
  }

  function receive(line) {
    lines.push(line);
    if (lines.length > MAX_KEPT) { const n = lines.length - MAX_KEPT; lines.splice(0, n); dropped += n; }
    pending.push(line);
    received++;
  }
  let received = 0;

  async function connect() {
    while (!aborted && !ended) {
      controller = new AbortController();
      const headers = lastId !== null ? { 'Last-Event-ID': lastId } : {};
      try {
        const response = await apiFetch(url, { headers, signal: controller.signal });
        if (!response.ok) {
          state.textContent = t('log.read_failed', { status: response.status });
          return;
        }
        state.textContent = t('log.live');
        root.dataset.state = 'live';
        await readEvents(response.body);
      } catch (e) {
        if (aborted) return;
        state.textContent = t('log.reconnecting');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  async function readEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      if (buffer.indexOf('\n\n') < 0) continue;
      // Whole events only; the unfinished tail waits for the next chunk.
      const blocks = buffer.split('\n\n');
      buffer = blocks.pop();
      for (let i = 0; i < blocks.length; i++) {
        if (parseEvent(blocks[i])) return;
        // A big chunk (a burst read at once) is parsed in slices, letting the page
        // draw and answer in between.
        if (i % 1000 === 999) {
          if (!frame) frame = requestAnimationFrame(flush);
          await new Promise((r) => setTimeout(r, 0));
        }
      }
      if (pending.length && !frame) frame = requestAnimationFrame(flush);
    }
  }

  /// One SSE event; true at `event: end`.
  function parseEvent(block) {
    let event = 'message';
    let data = null;
    let start = 0;
    while (start <= block.length) {
      let end = block.indexOf('\n', start);
      if (end < 0) end = block.length;
      const field = block.slice(start, end);
      start = end + 1;
      if (!field || field.charCodeAt(0) === 58) continue; // empty, or a `:` keep-alive comment
      const colon = field.indexOf(':');
      const name = colon < 0 ? field : field.slice(0, colon);
      let v = colon < 0 ? '' : field.slice(colon + 1);
      if (v.charCodeAt(0) === 32) v = v.slice(1);
      if (name === 'data') data = data === null ? v : data + '\n' + v;
      else if (name === 'id') lastId = v;
      else if (name === 'event') event = v;
    }
    if (event === 'end') {
      ended = true;
      if (pending.length && !frame) frame = requestAnimationFrame(flush);
      state.textContent = t('log.end');
      root.dataset.state = 'ended';
      if (onEnd) onEnd();
      return true;
    }
    if (data !== null) receive(data);
    return false;
  }

  connect();
  return {
    element: root,
    close() { aborted = true; if (controller) controller.abort(); if (frame) cancelAnimationFrame(frame); },
  };
}
