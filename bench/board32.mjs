// A board on a 32-bit MicroPython: the webassembly port (wasm32, the word
// size of a Pico W or an ESP32) run by Node.js, booting the flashed runtime
// from plain .mpy files in its in-memory filesystem, as a board without a
// ROMFS partition does (stock firmware).  The port has no socket module:
// its TCP goes through Node's `net` (module `jsnet`, used by
// bench/board32_shim.py).  Used by bench/sec_boards.py only.
//
//   node bench/board32.mjs PACKAGE_DIR BOARD_DIR
//
// PACKAGE_DIR holds micropython.mjs/.wasm (bench/board32.py fetches it);
// BOARD_DIR is what the board's filesystem holds (aegis.json, rt.json,
// lib/node/**.mpy).  The runtime's console goes to stdout.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

const [pkgDir, boardDir] = process.argv.slice(2);
const { loadMicroPython } = await import(path.resolve(pkgDir, "micropython.mjs"));
const mp = await loadMicroPython({
  heapsize: 192 * 1024,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stdout.write(line + "\n"),
});

function copyTree(src, dst) {
  mp.FS.mkdirTree(dst);
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, e.name);
    if (e.isDirectory()) copyTree(s, dst + "/" + e.name);
    else mp.FS.writeFile(dst + "/" + e.name, fs.readFileSync(s));
  }
}
copyTree(boardDir, "/board");

// TCP for the shim, kept outside the Python heap as a board's socket
// buffers are (lwIP's): Python reads into its own buffer at its address,
// and a write is read from the wasm memory at the buffer's address.
// Sockets are numbered and only integers go from Python to JS: a Python
// object handed to JS is kept alive by the port's proxy tables.
const socks = [];
const mem = mp._module;
mp.registerJsModule("jsnet", {
  connect(host, port, wake) {
    const s = net.connect({ host, port, noDelay: true });
    const k = { s, state: 0, q: [] };        // state 0 connecting, 1 up, 2 closed
    s.on("connect", () => { k.state = 1; wake(); });
    s.on("data", (b) => { k.q.push(b); s.pause(); wake(); });   // read resumes it
    s.on("close", () => { k.state = 2; wake(); });
    s.on("error", () => {});        // "close" follows
    socks.push(k);
    return socks.length - 1;
  },
  state: (id) => socks[id].state,
  read(id, addr, n) {               // bytes copied; 0: none yet; -1: closed
    const k = socks[id];
    if (!k.q.length) return k.state === 2 ? -1 : 0;
    const b = k.q[0];
    const m = Math.min(n, b.length);
    for (let i = 0; i < m; i++) mem.setValue(addr + i, b[i], "i8");
    if (m < b.length) k.q[0] = b.subarray(m);
    else k.q.shift();
    if (!k.q.length) k.s.resume();
    return m;
  },
  write(id, addr, n) {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = mem.getValue(addr + i, "i8");
    socks[id].s.write(b);
  },
  close(id) {
    socks[id].s.destroy();
  },
});

// Heap samples.  This port's gc.collect() finds its roots conservatively,
// and inside a deep Python call stack stale slots keep garbage alive (the
// runtime's own heap probe reads far too high there).  So the heap is
// sampled here, between asyncio steps, where Python has returned to JS:
// gc.collect() then gc.mem_alloc(), every millisecond; the largest value
// is kept.  What the previous call from JS left referenced can survive
// one collection: a sample is the lower of two, each from its own call.
// SIGUSR1 prints "board32-heap NOW PEAK MODULES-AT-PEAK..." and starts a
// new peak.
let peak = 0;
function collect() {
  mp.runPython("import gc\ngc.collect()\n_heap = gc.mem_alloc()");
  return mp.globals.get("_heap");
}
function sample() {
  return Math.min(collect(), collect());
}
let sampling = false;
setInterval(() => {
  if (!sampling) return;
  const a = sample();
  if (a > peak) {
    peak = a;
    peakMods = modules();
  }
}, 1);
// The modules loaded at the peak: their bytecode is in it (no ROMFS here).
let peakMods = "";
function modules() {
  mp.runPython("import sys\n_mods = ' '.join(sorted(sys.modules))");
  const m = mp.globals.get("_mods");
  mp.runPython("del _mods");        // not in the heap the next sample reads
  return m;
}
process.on("SIGUSR1", () => {
  const a = sample();
  if (a >= peak) {
    peak = a;
    peakMods = modules();
  }
  process.stdout.write(`board32-heap ${a} ${peak} ${peakMods}\n`);
  peak = 0;
});

process.stdout.write(`board32-bare ${sample()}\n`);     // the interpreter alone
const shim = fs.readFileSync(new URL("./board32_shim.py", import.meta.url), "utf8");
mp.runPython(shim);
sampling = true;
try {
  await mp.runPythonAsync("await asyncio.create_task(_boot())\n");
} catch (e) {
  process.stdout.write("board32: " + (e.message || e) + "\n");
  process.exit(1);
}
process.exit(0);
