// A small 2048: a 4x4 grid, arrow keys slide and merge, a new tile after each move.
var size = 4, grid = [], score = 0;

function empty() {
  var cells = [];
  for (var r = 0; r < size; r++) for (var c = 0; c < size; c++) if (!grid[r][c]) cells.push([r, c]);
  return cells;
}

function addTile() {
  var cells = empty();
  if (!cells.length) return;
  var pick = cells[Math.floor(Math.random() * cells.length)];
  grid[pick[0]][pick[1]] = Math.random() < 0.9 ? 2 : 4;
}

// Slides one row to the left, merging each pair once; returns the new row.
function slide(row) {
  var tiles = row.filter(function (v) { return v; }), out = [];
  for (var i = 0; i < tiles.length; i++) {
    if (tiles[i] === tiles[i + 1]) { out.push(tiles[i] * 2); score += tiles[i] * 2; i++; }
    else out.push(tiles[i]);
  }
  while (out.length < size) out.push(0);
  return out;
}

function rotate(g) {
  var out = [];
  for (var c = 0; c < size; c++) { out.push([]); for (var r = size - 1; r >= 0; r--) out[c].push(g[r][c]); }
  return out;
}

// Turns the board so the move is "left", slides, and turns it back.
function move(turns) {
  var g = grid;
  for (var i = 0; i < turns; i++) g = rotate(g);
  var moved = g.map(slide);
  for (i = 0; i < (4 - turns) % 4; i++) moved = rotate(moved);
  if (JSON.stringify(moved) !== JSON.stringify(grid)) { grid = moved; addTile(); }
  draw();
}

function draw() {
  var board = document.getElementById("board");
  board.innerHTML = "";
  grid.forEach(function (row) {
    row.forEach(function (v) {
      var cell = document.createElement("div");
      cell.className = "cell" + (v ? (v > 64 ? " big" : " v" + v) : "");
      cell.textContent = v || "";
      board.appendChild(cell);
    });
  });
  document.getElementById("score").textContent = score;
  var won = grid.some(function (row) { return row.indexOf(2048) >= 0; });
  document.getElementById("status").textContent = won ? "You made 2048!" : (empty().length ? "" : "No empty cell left.");
}

document.addEventListener("keydown", function (e) {
  var turns = { ArrowLeft: 0, ArrowDown: 1, ArrowRight: 2, ArrowUp: 3 }[e.key];
  if (turns !== undefined) { e.preventDefault(); move(turns); }
});

for (var r = 0; r < size; r++) grid.push([0, 0, 0, 0]);
addTile(); addTile(); draw();
