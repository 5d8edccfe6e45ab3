// ANSI colour escapes (SGR) → spans with classes. Everything else is stripped. The
// text goes into text nodes only: a log line can never become markup.

const SGR = /\x1b\[([0-9;]*)m/g;
const OTHER = /\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|[\x00-\x08\x0b-\x1f\x7f]/g;

/// Appends `text` to `parent` as text nodes and coloured spans.
export function appendAnsi(parent, text) {
  if (text.indexOf('\x1b') < 0) {
    parent.append(text.replace(OTHER, ''));
    return;
  }
  let fg = null;
  let bold = false;
  let last = 0;
  const emit = (chunk) => {
    chunk = chunk.replace(OTHER, '');
    if (!chunk) return;
    if (fg === null && !bold) { parent.append(chunk); return; }
    const span = document.createElement('span');
    span.className = (fg !== null ? 'a' + fg : '') + (bold ? ' ab' : '');
    span.textContent = chunk;
    parent.append(span);
  };
  SGR.lastIndex = 0;
  let m;
  while ((m = SGR.exec(text))) {
    emit(text.slice(last, m.index));
    last = SGR.lastIndex;
    const codes = m[1] === '' ? [0] : m[1].split(';').map(Number);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) { fg = null; bold = false; }
      else if (c === 1) bold = true;
      else if (c === 22) bold = false;
      else if (c === 39) fg = null;
      else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) fg = c;
      else if (c === 38 || c === 48) { i += codes[i + 1] === 5 ? 2 : 4; } // 256/true colour: not shown
    }
  }
  emit(text.slice(last));
}
